/* libFuzzer harness for the API-key pepper version rows (api/services/pepper_ring.h): the hex of a
 * sealed pepper, read from cluster_meta, which a restored backup file may carry.
 *
 * Input: one byte of version, then the row's text. Checks besides "no crash, no overread": only a
 * row of exactly the sealed length in lowercase hex can open; the message never quotes the row; a
 * row that opens gives the same pepper twice. The root pepper is fixed (32 bytes of 0x42), so the
 * seed corpus holds rows sealed under it (made with Python's cryptography: HKDF-SHA256 with info
 * "gantry provider keyring v1", AES-256-GCM with AAD "gantry apikey pepper <version>"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/services/pepper_ring.h"

static struct pepper_ring ring;
static int ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errmsg[GERR_MSG_SIZE];
    if (!ready) {
        uint8_t root[PEPPER_RING_SIZE];
        memset(root, 0x42, sizeof root);
        if (pepper_ring_init(&ring, root, errmsg) != 0) {
            abort();
        }
        ready = 1;
    }
    if (size < 1 || size > 1024) {
        return 0;
    }
    unsigned version = data[0];
    char *row = malloc(size);
    memcpy(row, data + 1, size - 1);
    row[size - 1] = '\0';
    uint8_t a[PEPPER_RING_SIZE], b[PEPPER_RING_SIZE];
    int rv = pepper_ring_open_row(&ring, version, row, a, errmsg);
    if (rv == 0) {
        size_t n = strlen(row);
        if (n != 2 * (KEYRING_SEAL_OVERHEAD + PEPPER_RING_SIZE) || strspn(row, "0123456789abcdef") != n) {
            abort();
        }
        if (pepper_ring_open_row(&ring, version, row, b, errmsg) != 0 || memcmp(a, b, sizeof a) != 0) {
            abort();
        }
    } else if (rv != GERR_INVAL && rv != GERR_PERM) {
        abort();
    } else if (strlen(row) >= 8 && strstr(errmsg, row) != NULL) {
        abort();
    }
    free(row);
    return 0;
}
