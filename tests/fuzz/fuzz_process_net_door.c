/* libFuzzer harness for drivers/process_net.h's process_net_door_decode: the door files the process
 * driver writes and every replica's relay reads (a file in the state directory, trusted no more
 * than any other file there).
 *
 * Promises checked (abort() on a broken one): the answer is 0 or GERR_PROTO; on 0 every field is
 * NUL-terminated within its buffer, holds only printable ASCII without spaces, the namespace and
 * name are not empty, and the address is in 10.213.0.0/16. Input is copied into a heap block of
 * exactly its size so ASan sees any overread. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/process_net.h"
#include "lib/err.h"

static void check(const char *s, size_t cap, bool nonempty)
{
    size_t n = strnlen(s, cap);
    if (n == cap || (nonempty && n == 0)) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    struct process_net_door d;
    char err[GERR_MSG_SIZE];
    int rv = process_net_door_decode(buf, size, &d, err);
    if (rv != 0 && rv != GERR_PROTO) {
        abort();
    }
    if (rv == 0) {
        check(d.ns, sizeof d.ns, true);
        check(d.name, sizeof d.name, true);
        check(d.owner, sizeof d.owner, false);
        check(d.addr, sizeof d.addr, true);
        if (strncmp(d.addr, "10.213.", 7) != 0) {
            abort();
        }
    }
    free(buf);
    return 0;
}
