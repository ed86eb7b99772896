/* The sealed backup: a backup archive (store/archive.h) encrypted with AES-256-GCM under a key the
 * operator keeps apart from the backups, written while the archive streams in, so the plaintext
 * never has to touch the disk. `gantry cluster backup --encrypt-key-file` writes it, `gantry
 * cluster backup-verify` and `gantryd restore --backup-key-file` read it.
 *
 * Layout (a text header, then binary records):
 *
 *   "GANTRY-SEALED-BACKUP 1\n"
 *   "cluster <id>\n"           1..64 bytes of [A-Za-z0-9-]: the cluster the backup was taken from
 *   "revision <n>\n"           the cluster revision the archive is consistent at
 *   "schema <n>\n"             the schema version the cluster reported when the backup started
 *   "created_ms <n>\n"         Unix milliseconds
 *   "key_id <16 hex>\n"        the key's fingerprint: HMAC-SHA256(key, "gantry sealed backup v1 key id"),
 *                              first 8 bytes; it tells keys apart without revealing them
 *   "salt <16 hex>\n"          8 random bytes, new for every file
 *   "chunk <n>\n"              plaintext bytes of every data record but the last (4096..4194304)
 *   "\n"
 *   then records: u32 big-endian length L (bit 31 set: the final record), L bytes of ciphertext,
 *   a 16-byte GCM tag; then nothing.
 *
 * Numbers are decimal without leading zeros (at most 19 digits). Data records hold 1..chunk bytes
 * of the archive, every one but the last exactly chunk bytes. The final record, always present
 * and always last, holds 40 bytes: the archive's size (u64 big-endian) and its SHA-256. A file's
 * records are sealed with AES-256-GCM under HMAC-SHA256(key, "gantry sealed backup v1 data key" ||
 * salt), record i with the nonce salt || u32 big-endian i and the associated data SHA-256(header)
 * || u32 big-endian i || u8 final. So a changed header, a dropped, repeated, swapped or truncated
 * record, a data record passed off as the final one, and bytes after the final record are all
 * refused; the archive size and checksum are known only at the end of the stream, which is why
 * they travel in the (authenticated, encrypted) final record rather than in the header.
 *
 * Decoding is strict: any deviation is GERR_INVAL with the offset in @errmsg; a record that fails
 * authentication, or a key whose fingerprint is not the header's, is GERR_PERM. It never reads
 * past the buffer. Keys and plaintext are wiped (OPENSSL_cleanse) before their memory is freed. */
#ifndef GANTRY_STORE_SEALED_H
#define GANTRY_STORE_SEALED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"

#define STORE_SEALED_MAGIC      "GANTRY-SEALED-BACKUP 1\n"
#define STORE_SEALED_KEY_SIZE   32u
#define STORE_SEALED_TAG_SIZE   16u
#define STORE_SEALED_CHUNK      65536u
#define STORE_SEALED_CHUNK_MIN  4096u
#define STORE_SEALED_CHUNK_MAX  4194304u
#define STORE_SEALED_HEADER_MAX 1024u
#define STORE_SEALED_KEY_ENV    "GANTRY_BACKUP_KEY"

/* What the header says (and, once opened with the key, what the final record says). */
struct store_sealed_info {
    char cluster_id[65];
    uint64_t revision;
    uint64_t schema_version;
    uint64_t created_ms;
    char key_id[17]; /* 16 lowercase hex digits */
    uint32_t chunk;
    uint64_t records;     /* data records (the final record not counted) */
    uint64_t sealed_size; /* the whole file */
    bool opened;          /* the fields below were authenticated with the key */
    uint64_t plain_size;  /* the archive's size */
    uint8_t sha256[32];   /* the archive's SHA-256 */
};

/* --- keys --- */

/* The key's fingerprint, as the header carries it. */
void store_sealed_key_id(const uint8_t key[STORE_SEALED_KEY_SIZE], char out[17]);

/* A key from the bytes of a key file: exactly 32 raw bytes, or 64 hex digits optionally followed
 * by one "\n" (or "\r\n"). GERR_INVAL otherwise (the message never quotes the key). */
int store_sealed_key_parse(const uint8_t *text, size_t len, uint8_t key[STORE_SEALED_KEY_SIZE], char *errmsg);

/* Read a key file: it must be a regular file that neither group nor others may read or write
 * (GERR_PERM, telling how to fix it), then store_sealed_key_parse. Errors of reading: GERR_NOTFOUND,
 * GERR_IO. The read buffer is wiped. */
int store_sealed_key_load(const char *path, uint8_t key[STORE_SEALED_KEY_SIZE], char *errmsg);

/* --- writing --- */

struct store_sealer;

/* Called with each piece of the sealed file, in order; non-zero stops the sealer and is returned. */
typedef int (*store_sealed_write_cb)(const uint8_t *p, size_t n, void *arg);

/* Start a sealed file: the header (from @info's cluster_id, revision, schema_version, created_ms;
 * the salt is drawn here) goes to @write at once. The key is copied; *@out is freed with
 * store_sealer_free. GERR_INVAL (a cluster id the format cannot carry), GERR_IO (no randomness),
 * or the callback's code. */
int store_sealer_new(const uint8_t key[STORE_SEALED_KEY_SIZE], const struct store_sealed_info *info,
                     store_sealed_write_cb write, void *arg, struct store_sealer **out, char *errmsg);

/* Seal @n more bytes of the archive; full records go to the callback, the rest waits (in memory)
 * for more. */
int store_sealer_update(struct store_sealer *s, const uint8_t *p, size_t n, char *errmsg);

/* Write the last data record and the final record. @plain_size and @sha256 (may be NULL) receive
 * what the final record holds. No update may follow. */
int store_sealer_finish(struct store_sealer *s, uint64_t *plain_size, uint8_t sha256[32], char *errmsg);

/* Wipe the key and any buffered plaintext, and free. NULL is fine. */
void store_sealer_free(struct store_sealer *s);

/* --- reading --- */

/* Whether @data starts like a sealed backup (the magic line); decides nothing else. */
bool store_sealed_detect(const uint8_t *data, size_t len);

/* Check the sealed file @data: with @key NULL, only its structure (header, record framing, the
 * final record last; info->opened stays false); with a key, every record's tag, the final
 * record's size and SHA-256 against the decrypted archive, and then info->opened is true. With a
 * key and @plain non-NULL the archive is appended to @plain (wipe it with store_sealed_buf_wipe);
 * on failure nothing stays in @plain beyond what it held before. @info is filled as far as the
 * header was read. Errors: GERR_INVAL (malformed, truncated, trailing bytes), GERR_PERM (another
 * key, or a record that fails authentication: corrupted or tampered with). */
int store_sealed_open(const uint8_t *data, size_t len, const uint8_t *key, struct buf *plain,
                      struct store_sealed_info *info, char *errmsg);

/* Wipe a buffer's whole allocation, then buf_close it. */
void store_sealed_buf_wipe(struct buf *b);

#endif
