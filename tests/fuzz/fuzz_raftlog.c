/* libFuzzer harness for raft/raftlog.h: any bytes as a Raft log segment (what raftlog_tail reads
 * from a node's directory), and the ids it yields as a target's tail against a leader's.
 *
 * Promises checked (abort() on a broken one): raftlog_scan answers 0 or GERR_PROTO, the latter
 * only for a format word other than 0 and 1; it never claims more ids than it wrote when given
 * room for all; the count with room for none is at least the count with room for all (data is
 * checked only as far back as the ids wanted); an entry's size
 * never exceeds the input; a tail is found in the log it came from with lag 0. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "raft/raftlog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size > 0 ? size : 1);
    memcpy(copy, data, size);
    size_t max = size / 16 + 1, n = 0, n_none = 0;
    struct raftlog_entry_id *ids = malloc(sizeof *ids * max);
    int rv = raftlog_scan(copy, size, ids, max, &n);
    int rv_none = raftlog_scan(copy, size, NULL, 0, &n_none);
    /* With room for none, data checksums are not checked: the count can only be larger. */
    if (rv != rv_none || (rv != 0 && rv != GERR_PROTO) || n > n_none || n > max) {
        abort();
    }
    if (rv == GERR_PROTO) {
        uint64_t format = 0;
        for (int i = 7; i >= 0 && size >= 8; i--) {
            format = format << 8 | copy[i];
        }
        if (size < 8 || format == 0 || format == 1) {
            abort();
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i].size > size) {
            abort();
        }
    }
    if (n > 0) {
        unsigned k = n < RAFTLOG_PROBE_TAIL ? (unsigned)n : RAFTLOG_PROBE_TAIL;
        if (raftlog_lag(ids, (unsigned)n, ids + n - k, k) != 0) {
            abort();
        }
    }
    free(ids);
    free(copy);
    return 0;
}
