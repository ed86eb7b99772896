/* The sealed backup container (store/sealed.h). */
#include "store/sealed.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lib/mem.h"
#include "lib/rand.h"

#define KEY_ID_LABEL   "gantry sealed backup v1 key id"
#define DATA_KEY_LABEL "gantry sealed backup v1 data key"
#define SALT_SIZE      8u
#define NONCE_SIZE     12u
#define FINAL_FLAG     0x80000000u
#define FINAL_LEN      40u
#define RECORD_HEAD    4u
#define DIGITS_MAX     19u
#define KEY_FILE_MAX   4096u

/* --- primitives --- */

static void hmac_sha256(const uint8_t key[STORE_SEALED_KEY_SIZE], const void *a, size_t alen, const void *b,
                        size_t blen, uint8_t out[32])
{
    uint8_t msg[128];
    if (alen + blen > sizeof msg) {
        /* Only called with the short labels above. */
        memset(out, 0, 32);
        return;
    }
    memcpy(msg, a, alen);
    if (blen > 0) {
        memcpy(msg + alen, b, blen);
    }
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)STORE_SEALED_KEY_SIZE, msg, alen + blen, out, &n);
    OPENSSL_cleanse(msg, sizeof msg);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_digit(uint8_t c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Strict: exactly 2 * @n hex digits (either case). */
static bool hex_decode(const uint8_t *text, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_digit(text[2 * i]), lo = hex_digit(text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* One record: AES-256-GCM under @key with nonce salt || index and AAD header hash || index || final.
 * Decryption returns GERR_PERM when the tag does not match. */
static int gcm(bool enc, const uint8_t key[32], const uint8_t salt[SALT_SIZE], const uint8_t header_hash[32],
               uint32_t index, bool final, const uint8_t *in, size_t n, uint8_t *out, uint8_t tag[16])
{
    uint8_t nonce[NONCE_SIZE], aad[32 + 4 + 1];
    memcpy(nonce, salt, SALT_SIZE);
    put_u32(nonce + SALT_SIZE, index);
    memcpy(aad, header_hash, 32);
    put_u32(aad + 32, index);
    aad[36] = final ? 1 : 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c != NULL && n <= INT32_MAX;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_SIZE, NULL) == 1;
    ok = ok && EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) == 1;
    ok = ok && EVP_CipherUpdate(c, NULL, &len, aad, (int)sizeof aad) == 1;
    ok = ok && (n == 0 || EVP_CipherUpdate(c, out, &len, in, (int)n) == 1);
    if (ok && !enc) {
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, STORE_SEALED_TAG_SIZE, tag) == 1;
    }
    int final_ok = ok && EVP_CipherFinal_ex(c, out + n, &len) == 1;
    if (final_ok && enc) {
        final_ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, STORE_SEALED_TAG_SIZE, tag) == 1;
    }
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        return GERR_INTERNAL;
    }
    return final_ok ? 0 : (enc ? GERR_INTERNAL : GERR_PERM);
}

static void data_key(const uint8_t key[32], const uint8_t salt[SALT_SIZE], uint8_t out[32])
{
    hmac_sha256(key, DATA_KEY_LABEL, strlen(DATA_KEY_LABEL), salt, SALT_SIZE, out);
}

/* --- keys --- */

void store_sealed_key_id(const uint8_t key[STORE_SEALED_KEY_SIZE], char out[17])
{
    uint8_t mac[32];
    hmac_sha256(key, KEY_ID_LABEL, strlen(KEY_ID_LABEL), NULL, 0, mac);
    hex_encode(mac, 8, out);
}

int store_sealed_key_parse(const uint8_t *text, size_t len, uint8_t key[STORE_SEALED_KEY_SIZE], char *errmsg)
{
    if (len == STORE_SEALED_KEY_SIZE) {
        memcpy(key, text, STORE_SEALED_KEY_SIZE);
        return 0;
    }
    size_t n = len;
    if (n > 0 && text[n - 1] == '\n') {
        n--;
        if (n > 0 && text[n - 1] == '\r') {
            n--;
        }
    }
    if (n == 2 * STORE_SEALED_KEY_SIZE && hex_decode(text, STORE_SEALED_KEY_SIZE, key)) {
        return 0;
    }
    OPENSSL_cleanse(key, STORE_SEALED_KEY_SIZE);
    gerr_set(errmsg, "a backup key is 32 raw bytes or 64 hex digits (this one has %zu bytes%s)", len,
             n == 2 * STORE_SEALED_KEY_SIZE ? ", not all hex digits" : "");
    return GERR_INVAL;
}

int store_sealed_key_load(const char *path, uint8_t key[STORE_SEALED_KEY_SIZE], char *errmsg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int err = errno;
        gerr_set(errmsg, "key file %s: %s", path, strerror(err));
        return gerr_from_errno(err);
    }
    struct stat st;
    int rv = 0;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        gerr_set(errmsg, "key file %s: %s", path, strerror(err));
        rv = gerr_from_errno(err);
    } else if (!S_ISREG(st.st_mode)) {
        gerr_set(errmsg, "key file %s is not a regular file", path);
        rv = GERR_INVAL;
    } else if ((st.st_mode & 077) != 0) {
        gerr_set(errmsg,
                 "key file %s may be read or written by group or others (mode %04o): refusing it; "
                 "run chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        rv = GERR_PERM;
    } else if (st.st_size > (off_t)KEY_FILE_MAX) {
        gerr_set(errmsg, "key file %s is too large to hold a key (%lld bytes)", path, (long long)st.st_size);
        rv = GERR_INVAL;
    }
    uint8_t text[KEY_FILE_MAX + 1];
    size_t len = 0;
    while (rv == 0) {
        ssize_t r = read(fd, text + len, sizeof text - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            int err = errno;
            gerr_set(errmsg, "key file %s: %s", path, strerror(err));
            rv = gerr_from_errno(err);
        } else if (r == 0) {
            break;
        } else if ((len += (size_t)r) > KEY_FILE_MAX) {
            gerr_set(errmsg, "key file %s is too large to hold a key", path);
            rv = GERR_INVAL;
        }
    }
    close(fd);
    if (rv == 0 && (rv = store_sealed_key_parse(text, len, key, errmsg)) != 0) {
        gerr_wrap(errmsg, "key file %s", path);
    }
    OPENSSL_cleanse(text, sizeof text);
    return rv;
}

/* --- writing --- */

struct store_sealer {
    uint8_t key[32];         /* the file's data key */
    uint8_t salt[SALT_SIZE]; /* from the header */
    uint8_t header_hash[32]; /* SHA-256 of the header */
    store_sealed_write_cb write;
    void *arg;
    EVP_MD_CTX *sha; /* of the archive */
    uint64_t plain_size;
    uint32_t index; /* the next record's */
    size_t fill;    /* bytes waiting in chunk */
    uint8_t *chunk; /* STORE_SEALED_CHUNK bytes of plaintext */
    uint8_t *out;   /* one sealed record */
    bool failed, finished;
};

static bool cluster_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

int store_sealer_new(const uint8_t key[STORE_SEALED_KEY_SIZE], const struct store_sealed_info *info,
                     store_sealed_write_cb write, void *arg, struct store_sealer **out, char *errmsg)
{
    *out = NULL;
    if (!cluster_id_ok(info->cluster_id)) {
        gerr_set(errmsg, "sealed backup: the cluster id \"%.64s\" is not 1..64 of [A-Za-z0-9-]",
                 info->cluster_id);
        return GERR_INVAL;
    }
    struct store_sealer *s = mem_zalloc(sizeof *s);
    if (rand_bytes(s->salt, sizeof s->salt) != 0) {
        mem_free(s);
        gerr_set(errmsg, "sealed backup: no random bytes for the salt");
        return GERR_IO;
    }
    char key_id[17], salt[2 * SALT_SIZE + 1];
    store_sealed_key_id(key, key_id);
    hex_encode(s->salt, SALT_SIZE, salt);
    struct buf h;
    buf_init(&h);
    buf_printf(&h,
               STORE_SEALED_MAGIC "cluster %s\nrevision %" PRIu64 "\nschema %" PRIu64 "\ncreated_ms %" PRIu64
                                  "\nkey_id %s\nsalt %s\nchunk %u\n\n",
               info->cluster_id, info->revision, info->schema_version, info->created_ms, key_id, salt,
               STORE_SEALED_CHUNK);
    unsigned int hl = 32;
    EVP_Digest(h.data, h.len, s->header_hash, &hl, EVP_sha256(), NULL);
    data_key(key, s->salt, s->key);
    s->write = write;
    s->arg = arg;
    s->sha = EVP_MD_CTX_new();
    if (s->sha == NULL || EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL) != 1) {
        buf_close(&h);
        store_sealer_free(s);
        gerr_set(errmsg, "sealed backup: SHA-256 is not available");
        return GERR_INTERNAL;
    }
    s->chunk = mem_alloc(STORE_SEALED_CHUNK);
    s->out = mem_alloc(RECORD_HEAD + STORE_SEALED_CHUNK + STORE_SEALED_TAG_SIZE);
    int rv = write(h.data, h.len, arg);
    buf_close(&h);
    if (rv != 0) {
        store_sealer_free(s);
        gerr_set(errmsg, "sealed backup: writing the header failed");
        return rv;
    }
    *out = s;
    return 0;
}

static int seal_record(struct store_sealer *s, const uint8_t *p, size_t n, bool final, char *errmsg)
{
    if (s->index == UINT32_MAX) {
        gerr_set(errmsg, "sealed backup: too many records");
        return GERR_TOOBIG;
    }
    put_u32(s->out, (uint32_t)n | (final ? FINAL_FLAG : 0));
    int rv = gcm(true, s->key, s->salt, s->header_hash, s->index, final, p, n, s->out + RECORD_HEAD,
                 s->out + RECORD_HEAD + n);
    if (rv != 0) {
        gerr_set(errmsg, "sealed backup: AES-256-GCM encryption failed");
        return rv;
    }
    s->index++;
    if ((rv = s->write(s->out, RECORD_HEAD + n + STORE_SEALED_TAG_SIZE, s->arg)) != 0) {
        gerr_set(errmsg, "sealed backup: writing record %u failed", s->index - 1);
    }
    return rv;
}

int store_sealer_update(struct store_sealer *s, const uint8_t *p, size_t n, char *errmsg)
{
    if (s->failed || s->finished) {
        gerr_set(errmsg, "sealed backup: the sealer is %s", s->failed ? "failed" : "finished");
        return GERR_INVAL;
    }
    EVP_DigestUpdate(s->sha, p, n);
    s->plain_size += n;
    while (n > 0) {
        size_t take = STORE_SEALED_CHUNK - s->fill < n ? STORE_SEALED_CHUNK - s->fill : n;
        memcpy(s->chunk + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill == STORE_SEALED_CHUNK) {
            int rv = seal_record(s, s->chunk, s->fill, false, errmsg);
            s->fill = 0;
            if (rv != 0) {
                s->failed = true;
                return rv;
            }
        }
    }
    return 0;
}

int store_sealer_finish(struct store_sealer *s, uint64_t *plain_size, uint8_t sha256[32], char *errmsg)
{
    if (s->failed || s->finished) {
        gerr_set(errmsg, "sealed backup: the sealer is %s", s->failed ? "failed" : "finished");
        return GERR_INVAL;
    }
    s->finished = true;
    int rv = s->fill > 0 ? seal_record(s, s->chunk, s->fill, false, errmsg) : 0;
    s->fill = 0;
    uint8_t summary[FINAL_LEN];
    unsigned int dl = 32;
    put_u64(summary, s->plain_size);
    EVP_DigestFinal_ex(s->sha, summary + 8, &dl);
    if (rv == 0) {
        rv = seal_record(s, summary, sizeof summary, true, errmsg);
    }
    if (plain_size != NULL) {
        *plain_size = s->plain_size;
    }
    if (sha256 != NULL) {
        memcpy(sha256, summary + 8, 32);
    }
    s->failed = rv != 0;
    return rv;
}

void store_sealer_free(struct store_sealer *s)
{
    if (s == NULL) {
        return;
    }
    if (s->chunk != NULL) {
        OPENSSL_cleanse(s->chunk, STORE_SEALED_CHUNK);
    }
    if (s->out != NULL) {
        OPENSSL_cleanse(s->out, RECORD_HEAD + STORE_SEALED_CHUNK + STORE_SEALED_TAG_SIZE);
    }
    mem_free(s->chunk);
    mem_free(s->out);
    EVP_MD_CTX_free(s->sha);
    OPENSSL_cleanse(s, sizeof *s);
    mem_free(s);
}

/* --- reading --- */

bool store_sealed_detect(const uint8_t *data, size_t len)
{
    size_t m = sizeof STORE_SEALED_MAGIC - 1;
    return len >= m && memcmp(data, STORE_SEALED_MAGIC, m) == 0;
}

void store_sealed_buf_wipe(struct buf *b)
{
    if (b->data != NULL) {
        OPENSSL_cleanse(b->data, b->cap);
    }
    buf_close(b);
}

struct cursor {
    const uint8_t *p;
    size_t len, off;
};

/* "<name> " then the rest of the line (without "\n") in *@v, *@vlen. */
static bool field(struct cursor *c, const char *name, const uint8_t **v, size_t *vlen)
{
    size_t n = strlen(name);
    if (c->len - c->off < n + 1 || memcmp(c->p + c->off, name, n) != 0 || c->p[c->off + n] != ' ') {
        return false;
    }
    const uint8_t *start = c->p + c->off + n + 1;
    const uint8_t *nl = memchr(start, '\n', c->len - (c->off + n + 1));
    if (nl == NULL) {
        return false;
    }
    *v = start;
    *vlen = (size_t)(nl - start);
    c->off = (size_t)(nl - c->p) + 1;
    return true;
}

static bool number(const uint8_t *v, size_t n, uint64_t *out)
{
    if (n == 0 || n > DIGITS_MAX || (n > 1 && v[0] == '0')) {
        return false;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return false;
        }
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return true;
}

static int parse_header(struct cursor *c, struct store_sealed_info *info, uint8_t salt[SALT_SIZE],
                        char *errmsg)
{
    size_t m = sizeof STORE_SEALED_MAGIC - 1;
    if (!store_sealed_detect(c->p, c->len)) {
        gerr_set(errmsg, "not a sealed backup (no \"GANTRY-SEALED-BACKUP 1\" line at offset 0)");
        return GERR_INVAL;
    }
    c->off = m;
    const uint8_t *v;
    size_t n;
    uint64_t chunk = 0;
    char cid[65];
    if (!field(c, "cluster", &v, &n) || n == 0 || n > 64) {
        goto bad;
    }
    memcpy(cid, v, n);
    cid[n] = '\0';
    if (memchr(cid, '\0', n) != NULL || !cluster_id_ok(cid)) {
        goto bad;
    }
    memcpy(info->cluster_id, cid, n + 1);
    if (!field(c, "revision", &v, &n) || !number(v, n, &info->revision) || !field(c, "schema", &v, &n) ||
        !number(v, n, &info->schema_version) || !field(c, "created_ms", &v, &n) ||
        !number(v, n, &info->created_ms)) {
        goto bad;
    }
    uint8_t kid[8];
    if (!field(c, "key_id", &v, &n) || n != 16 || !hex_decode(v, 8, kid)) {
        goto bad;
    }
    hex_encode(kid, 8, info->key_id);
    if (memcmp(info->key_id, v, 16) != 0) { /* lowercase only */
        goto bad;
    }
    char salt_hex[2 * SALT_SIZE + 1];
    if (!field(c, "salt", &v, &n) || n != 2 * SALT_SIZE || !hex_decode(v, SALT_SIZE, salt)) {
        goto bad;
    }
    hex_encode(salt, SALT_SIZE, salt_hex);
    if (memcmp(salt_hex, v, n) != 0 || !field(c, "chunk", &v, &n) || !number(v, n, &chunk) ||
        chunk < STORE_SEALED_CHUNK_MIN || chunk > STORE_SEALED_CHUNK_MAX) {
        goto bad;
    }
    info->chunk = (uint32_t)chunk;
    if (c->off >= c->len || c->p[c->off] != '\n' || c->off + 1 > STORE_SEALED_HEADER_MAX) {
        goto bad;
    }
    c->off++;
    return 0;
bad:
    gerr_set(errmsg, "sealed backup: malformed header at offset %zu", c->off);
    return GERR_INVAL;
}

int store_sealed_open(const uint8_t *data, size_t len, const uint8_t *key, struct buf *plain,
                      struct store_sealed_info *info, char *errmsg)
{
    memset(info, 0, sizeof *info);
    info->sealed_size = len;
    struct cursor c = {.p = data, .len = len};
    uint8_t salt[SALT_SIZE];
    int rv = parse_header(&c, info, salt, errmsg);
    if (rv != 0) {
        return rv;
    }
    uint8_t header_hash[32], dkey[32] = {0};
    unsigned int hl = 32;
    EVP_Digest(data, c.off, header_hash, &hl, EVP_sha256(), NULL);
    if (key != NULL) {
        char kid[17];
        store_sealed_key_id(key, kid);
        if (strcmp(kid, info->key_id) != 0) {
            gerr_set(errmsg, "sealed backup: this key (id %s) is not the backup's key (id %s)", kid,
                     info->key_id);
            return GERR_PERM;
        }
        data_key(key, salt, dkey);
    }
    size_t plain_start = plain != NULL ? plain->len : 0;
    if (key != NULL && plain != NULL) {
        /* The archive is never longer than the file: room reserved once, so no reallocation leaves
         * plaintext behind in freed memory. */
        buf_reserve(plain, len + 1);
    }
    uint8_t *scratch = key != NULL && plain == NULL ? (uint8_t *)mem_alloc(info->chunk) : NULL;
    EVP_MD_CTX *sha = key != NULL ? EVP_MD_CTX_new() : NULL;
    if (key != NULL && (sha == NULL || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)) {
        gerr_set(errmsg, "sealed backup: SHA-256 is not available");
        rv = GERR_INTERNAL;
    }
    bool final = false, short_seen = false;
    uint64_t index = 0, plain_size = 0;
    while (rv == 0 && !final) {
        size_t at = c.off;
        if (c.len - c.off < RECORD_HEAD) {
            gerr_set(errmsg,
                     "sealed backup: truncated at offset %zu (record %" PRIu64
                     "): the final record is missing",
                     at, index);
            rv = GERR_INVAL;
            break;
        }
        uint32_t head = get_u32(c.p + c.off);
        final = (head & FINAL_FLAG) != 0;
        size_t n = head & ~FINAL_FLAG;
        if (final ? n != FINAL_LEN : (n == 0 || n > info->chunk || short_seen)) {
            gerr_set(errmsg, "sealed backup: record %" PRIu64 " at offset %zu has a bad length (%zu%s)",
                     index, at, n, final ? ", final" : (short_seen ? ", after a short record" : ""));
            rv = GERR_INVAL;
            break;
        }
        if (c.len - c.off - RECORD_HEAD < n + STORE_SEALED_TAG_SIZE) {
            gerr_set(errmsg, "sealed backup: truncated at offset %zu (record %" PRIu64 " needs %zu bytes)",
                     at, index, RECORD_HEAD + n + STORE_SEALED_TAG_SIZE);
            rv = GERR_INVAL;
            break;
        }
        if (index >= UINT32_MAX) {
            gerr_set(errmsg, "sealed backup: too many records at offset %zu", at);
            rv = GERR_INVAL;
            break;
        }
        short_seen = n < info->chunk;
        const uint8_t *ct = c.p + c.off + RECORD_HEAD;
        c.off += RECORD_HEAD + n + STORE_SEALED_TAG_SIZE;
        if (key != NULL) {
            uint8_t summary[FINAL_LEN];
            uint8_t tag[STORE_SEALED_TAG_SIZE];
            memcpy(tag, ct + n, sizeof tag);
            uint8_t *out = final ? summary : plain != NULL ? plain->data + plain->len : scratch;
            rv = gcm(false, dkey, salt, header_hash, (uint32_t)index, final, ct, n, out, tag);
            if (rv == GERR_PERM) {
                gerr_set(errmsg,
                         "sealed backup: %s record %" PRIu64 " at offset %zu fails authentication (the file "
                         "is corrupted or was tampered with)",
                         final ? "the final" : "data", index, at);
            } else if (rv != 0) {
                gerr_set(errmsg, "sealed backup: AES-256-GCM failed at record %" PRIu64, index);
            } else if (!final) {
                EVP_DigestUpdate(sha, out, n);
                plain_size += n;
                if (plain != NULL) {
                    plain->len += n;
                }
            } else {
                uint8_t d[32];
                unsigned int dl = 32;
                EVP_DigestFinal_ex(sha, d, &dl);
                info->plain_size = get_u64(summary);
                memcpy(info->sha256, summary + 8, 32);
                if (info->plain_size != plain_size || CRYPTO_memcmp(d, info->sha256, 32) != 0) {
                    gerr_set(errmsg,
                             "sealed backup: the archive inside does not match its size or SHA-256 "
                             "(%" PRIu64 " bytes, %" PRIu64 " declared)",
                             plain_size, info->plain_size);
                    rv = GERR_PERM;
                }
            }
            OPENSSL_cleanse(summary, sizeof summary);
        }
        if (!final) {
            index++;
        }
    }
    if (rv == 0 && c.off != c.len) {
        gerr_set(errmsg, "sealed backup: %zu bytes after the final record at offset %zu", c.len - c.off,
                 c.off);
        rv = GERR_INVAL;
    }
    info->records = index;
    info->opened = rv == 0 && key != NULL;
    if (scratch != NULL) {
        OPENSSL_cleanse(scratch, info->chunk);
        mem_free(scratch);
    }
    EVP_MD_CTX_free(sha);
    OPENSSL_cleanse(dkey, sizeof dkey);
    if (rv != 0 && plain != NULL && plain->data != NULL) {
        OPENSSL_cleanse(plain->data + plain_start, plain->cap - plain_start);
        plain->len = plain_start;
    }
    return rv;
}
