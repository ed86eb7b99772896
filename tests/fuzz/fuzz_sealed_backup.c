/* libFuzzer harness for the sealed backup decoder (store/sealed.h), which `gantry cluster
 * backup-verify` and `gantryd restore` run on a file that came from outside.
 *
 * The first input byte chooses the mode: even, structure only (no key); odd, with the harness's
 * key (the seeds in corpus/sealed_backup/ are sealed under it, so the fuzzer reaches the records'
 * decryption and the final record's checks; tests/integration/test_sealed_interop.py --seeds DIR
 * writes them). The rest is the file, copied to an exact-size heap
 * block so an overread is caught. Checks besides "no crash": the message is NUL-terminated on
 * failure; on success the header fields are within their documented ranges, a keyed open is
 * reported opened with exactly plain_size bytes of output whose SHA-256 is the one reported, a
 * structure-only open is not reported opened and writes nothing; on failure nothing is left in
 * the output buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "store/sealed.h"

static const uint8_t fuzz_key[STORE_SEALED_KEY_SIZE] = "gantry-fuzz-sealed-backup-key-01";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    bool keyed = (data[0] & 1) != 0;
    size_t n = size - 1;
    uint8_t *copy = malloc(n > 0 ? n : 1);
    memcpy(copy, data + 1, n);
    char errmsg[GERR_MSG_SIZE];
    struct store_sealed_info info;
    struct buf plain;
    buf_init(&plain);
    int rv = store_sealed_open(copy, n, keyed ? fuzz_key : NULL, &plain, &info, errmsg);
    if (rv != 0) {
        if (memchr(errmsg, '\0', sizeof errmsg) == NULL || (rv != GERR_INVAL && rv != GERR_PERM) ||
            plain.len != 0 || info.opened) {
            abort();
        }
    } else {
        size_t id = strlen(info.cluster_id);
        if (id == 0 || id > 64 || strlen(info.key_id) != 16 || info.chunk < STORE_SEALED_CHUNK_MIN ||
            info.chunk > STORE_SEALED_CHUNK_MAX || info.sealed_size != n || info.opened != keyed) {
            abort();
        }
        if (keyed) {
            uint8_t d[32];
            unsigned int dl = 32;
            EVP_Digest(plain.data != NULL ? plain.data : (const uint8_t *)"", plain.len, d, &dl, EVP_sha256(),
                       NULL);
            if (plain.len != info.plain_size || plain.len > n || memcmp(d, info.sha256, 32) != 0) {
                abort();
            }
        } else if (plain.len != 0) {
            abort();
        }
    }
    store_sealed_buf_wipe(&plain);
    free(copy);
    return 0;
}
