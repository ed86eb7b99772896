/* libFuzzer harness for raft/raftlog.h: any bytes as a Raft log segment (what raftlog_tail reads
 * from a node's directory), and the ids it yields as a target's tail against a leader's.
 *
 * Promises checked (abort() on a broken one): raftlog_scan answers 0 or GERR_PROTO, the latter
 * only for a format word other than 0 and 1; it never claims more ids than it wrote when given
 * room for all; the count with room for none is at least the count with room for all (data is
 * checked only as far back as the ids wanted); an entry's size
 * never exceeds the input; a tail is found in the log it came from with lag 0. And the reader
 * (raftlog_reader_tail), given the same bytes as an open segment written in two steps (the first
 * half, then the rest appended, as libraft appends), answers what raftlog_tail answers. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "raft/raftlog.h"

static char dir[64];

/* The reader against raftlog_tail after @len bytes of @data were written to dir/open-1. */
static void same_as_tail(struct raftlog_reader *r, size_t max)
{
    struct raftlog_entry_id *a = malloc(sizeof *a * max), *b = malloc(sizeof *b * max);
    unsigned na = 0, nb = 0;
    char err[GERR_MSG_SIZE];
    int ra = raftlog_tail(dir, a, (unsigned)max, &na, err);
    int rb = raftlog_reader_tail(r, b, (unsigned)max, &nb, err);
    if (ra != rb || na != nb || (na > 0 && memcmp(a, b, sizeof *a * na) != 0)) {
        abort();
    }
    free(a);
    free(b);
}

static void reader_in_two_steps(const uint8_t *data, size_t size, size_t max)
{
    if (dir[0] == '\0') {
        snprintf(dir, sizeof dir, "/tmp/fuzz-raftlog-XXXXXX");
        if (mkdtemp(dir) == NULL) {
            abort();
        }
    }
    char path[128];
    snprintf(path, sizeof path, "%s/open-1", dir);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    size_t cut = size / 2;
    if (fd < 0 || pwrite(fd, data, cut, 0) != (ssize_t)cut) {
        abort();
    }
    struct raftlog_reader *r = raftlog_reader_new(dir);
    same_as_tail(r, max);
    if (pwrite(fd, data + cut, size - cut, (off_t)cut) != (ssize_t)(size - cut)) {
        abort();
    }
    close(fd);
    same_as_tail(r, max);
    raftlog_reader_free(r);
}

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
    reader_in_two_steps(data, size, max);
    free(ids);
    free(copy);
    return 0;
}
