/* Reading the end of a dqlite node's Raft log from its directory. See raftlog.h. */
#include "raft/raftlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/file.h"
#include "lib/mem.h"

/* A segment is at most 8 MB in libraft 0.15 (UV__MAX_SEGMENT_SIZE); room for a larger block size. */
#define SEGMENT_MAX_BYTES (64u << 20)
#define ATTEMPTS          5

/* Slicing-by-8 tables for the MSB-first CRC: crc_table[0] is the classic byte table, and
 * crc_table[k][i] is byte i's contribution k bytes further back. Eight bytes per step: the probe
 * reads whole 8 MB segments on both sides every 50 ms while a transfer waits, so this is the cost
 * that matters (about 5x the byte-at-a-time loop). */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i << 24;
        for (int k = 0; k < 8; k++) {
            c = (c & 0x80000000u) != 0 ? (c << 1) ^ 0x04c11db7u : c << 1;
        }
        crc_table[0][i] = c;
    }
    for (int k = 1; k < 8; k++) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t prev = crc_table[k - 1][i];
            crc_table[k][i] = (prev << 8) ^ crc_table[0][prev >> 24];
        }
    }
}

uint32_t raftlog_crc32(const void *p, size_t n, uint32_t init)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *b = p;
    uint32_t crc = init;
    for (; n >= 8; n -= 8, b += 8) {
        uint32_t hi = crc ^ ((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
        crc = crc_table[7][hi >> 24] ^ crc_table[6][(hi >> 16) & 0xffu] ^ crc_table[5][(hi >> 8) & 0xffu] ^
              crc_table[4][hi & 0xffu] ^ crc_table[3][b[4]] ^ crc_table[2][b[5]] ^ crc_table[1][b[6]] ^
              crc_table[0][b[7]];
    }
    for (; n > 0; n--, b++) {
        crc = (crc << 8) ^ crc_table[0][((crc >> 24) ^ *b) & 0xffu];
    }
    return crc;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A batch whose header checked out; its data is checked only when its entries are wanted. */
struct batch {
    const uint8_t *header; /* the count, then the entry headers */
    const uint8_t *data;
    uint64_t count, data_len;
    uint32_t crc_data;
};

/* The batches of a segment by their headers alone (count, header checksum, bounds), up to the
 * first that is not complete. Heap (mem_free) in *@out. */
static size_t walk_headers(const uint8_t *bytes, size_t len, struct batch **out)
{
    size_t n = 0, cap = 0, off = 8;
    *out = NULL;
    for (;;) {
        if (len - off < 16) {
            break;
        }
        uint32_t crc_header = le32(bytes + off), crc_data = le32(bytes + off + 4);
        const uint8_t *header = bytes + off + 8;
        uint64_t count = le64(header);
        size_t room = len - off - 8;
        if (count == 0 || count > (room - 8) / 16) {
            break; /* the end of what was written, or a batch still being written */
        }
        size_t header_len = 8 + 16 * (size_t)count;
        if (raftlog_crc32(header, header_len, 0) != crc_header) {
            break;
        }
        uint64_t data_len = 0;
        for (uint64_t i = 0; i < count; i++) {
            data_len += le32(header + 8 + 16 * i + 12);
        }
        if (data_len > room - header_len) {
            break;
        }
        if (n == cap) {
            cap = cap == 0 ? 64 : cap * 2;
            *out = mem_realloc(*out, sizeof **out * cap);
        }
        (*out)[n++] = (struct batch){.header = header,
                                     .data = header + header_len,
                                     .count = count,
                                     .data_len = data_len,
                                     .crc_data = crc_data};
        off += 8 + header_len + (size_t)data_len;
    }
    return n;
}

int raftlog_scan(const uint8_t *bytes, size_t len, struct raftlog_entry_id *out, size_t max, size_t *n)
{
    *n = 0;
    if (len < 8) {
        return 0;
    }
    uint64_t format = le64(bytes);
    if (format == 0) {
        return 0; /* preallocated, nothing written yet */
    }
    if (format != 1) {
        return GERR_PROTO;
    }
    struct batch *bs;
    size_t nb = walk_headers(bytes, len, &bs);
    /* Check data from the end back, only as far as the wanted ids reach: a batch failing its data
     * checksum ends the segment before it (everything after it is dropped, as a forward read
     * would), and the collection starts over before it. */
    size_t keep = nb, from = nb;
    uint64_t collected = 0;
    while (from > 0 && collected < max) {
        const struct batch *b = &bs[from - 1];
        if (raftlog_crc32(b->data, (size_t)b->data_len, 0) != b->crc_data) {
            keep = from - 1;
            from = keep;
            collected = 0;
            continue;
        }
        collected += b->count;
        from--;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < keep; i++) {
        total += bs[i].count;
    }
    /* The ids of the last min(max, total) entries, from the checked batches [from, keep). */
    uint64_t skip = collected > max ? collected - max : 0;
    size_t k = 0;
    for (size_t i = from; i < keep; i++) {
        const struct batch *b = &bs[i];
        size_t at = 0;
        for (uint64_t e = 0; e < b->count; e++) {
            const uint8_t *h = b->header + 8 + 16 * e;
            uint32_t size = le32(h + 12);
            if (skip > 0) {
                skip--;
            } else if (k < max) {
                /* A batch of one entry (the leader's usual case) has its entry's checksum already. */
                out[k++] = (struct raftlog_entry_id){
                    .term = le64(h),
                    .size = size,
                    .crc = b->count == 1 ? b->crc_data : raftlog_crc32(b->data + at, size, 0)};
            }
            at += size;
        }
    }
    mem_free(bs);
    *n = (size_t)total;
    return 0;
}

struct segment {
    bool open;
    uint64_t a, b; /* closed: first and last index; open: the counter */
    char name[64];
};

static int segment_cmp(const void *x, const void *y)
{
    const struct segment *s = x, *t = y;
    if (s->open != t->open) {
        return s->open ? 1 : -1; /* closed ones first */
    }
    return s->a < t->a ? -1 : s->a > t->a;
}

/* The directory's segments, oldest first. Heap (mem_free). */
static int list_segments(const char *dir, struct segment **out, size_t *n, char *errmsg)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        int rv = gerr_from_errno(errno);
        gerr_set(errmsg, "raft log %s: %s", dir, strerror(errno));
        return rv == GERR_NOTFOUND ? GERR_NOTFOUND : GERR_IO;
    }
    size_t cap = 16;
    *out = mem_alloc(sizeof **out * cap);
    *n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct segment s = {0};
        unsigned long long a, b;
        int used = 0;
        if (sscanf(e->d_name, "open-%llu%n", &a, &used) == 1 && e->d_name[used] == '\0') {
            s.open = true;
            s.a = a;
        } else if (strlen(e->d_name) == 33 && sscanf(e->d_name, "%16llu-%16llu%n", &a, &b, &used) == 2 &&
                   used == 33) {
            s.a = a;
            s.b = b;
        } else {
            continue;
        }
        size_t len = strlen(e->d_name);
        if (len >= sizeof s.name) {
            continue;
        }
        memcpy(s.name, e->d_name, len + 1);
        if (*n == cap) {
            cap *= 2;
            *out = mem_realloc(*out, sizeof **out * cap);
        }
        (*out)[(*n)++] = s;
    }
    closedir(d);
    qsort(*out, *n, sizeof **out, segment_cmp);
    return 0;
}

/* An open segment nothing was written to yet (format word 0). A file that cannot be read is not:
 * the full read reports it. */
static bool preallocated(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    uint8_t word[8];
    bool empty = pread(fd, word, sizeof word, 0) == (ssize_t)sizeof word && le64(word) == 0;
    close(fd);
    return empty;
}

/* One pass over the directory; GERR_BUSY (internal: read again) when a segment vanished under it. */
static int tail_once(const char *dir, struct raftlog_entry_id *out, unsigned max, unsigned *n, char *errmsg)
{
    struct segment *segs;
    size_t n_segs;
    int rv = list_segments(dir, &segs, &n_segs, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (n_segs == 0) {
        mem_free(segs);
        gerr_set(errmsg, "raft log %s: no segment", dir);
        return GERR_NOTFOUND;
    }
    /* Newest segment first; each one's ids fill @out from its end. */
    size_t pos = max, scratch_cap = 0;
    struct raftlog_entry_id *scratch = NULL;
    for (size_t i = n_segs; rv == 0 && i-- > 0 && pos > 0;) {
        char path[4096], *bytes = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, segs[i].name);
        if (segs[i].open && preallocated(path)) {
            continue; /* libraft prepares open segments ahead: 8 MB of zeros, no entry yet */
        }
        rv = file_read_all(path, SEGMENT_MAX_BYTES, &bytes, &len, errmsg);
        if (rv == GERR_NOTFOUND) {
            rv = GERR_BUSY; /* closed (renamed) or removed since the listing */
            break;
        }
        if (rv != 0) {
            rv = GERR_IO;
            break;
        }
        size_t k = 0;
        if (pos > scratch_cap) {
            scratch_cap = pos;
            scratch = mem_realloc(scratch, sizeof *scratch * scratch_cap);
        }
        rv = raftlog_scan((const uint8_t *)bytes, len, scratch, pos, &k);
        if (rv == 0 && k > 0) {
            size_t take = k < pos ? k : pos;
            memcpy(out + pos - take, scratch, sizeof *out * take);
            pos -= take;
        } else if (rv != 0) {
            gerr_set(errmsg, "raft log %s: unknown segment format", path);
        }
        mem_free(bytes);
    }
    mem_free(scratch);
    mem_free(segs);
    if (rv == 0) {
        *n = max - (unsigned)pos;
        memmove(out, out + pos, sizeof *out * *n);
    }
    return rv;
}

int raftlog_tail(const char *dir, struct raftlog_entry_id *out, unsigned max, unsigned *n, char *errmsg)
{
    *n = 0;
    int rv = GERR_BUSY;
    for (int attempt = 0; attempt < ATTEMPTS && rv == GERR_BUSY; attempt++) {
        rv = tail_once(dir, out, max, n, errmsg);
    }
    if (rv == GERR_BUSY) {
        gerr_set(errmsg, "raft log %s: segments kept changing while read", dir);
        rv = GERR_IO;
    }
    return rv;
}

uint64_t raftlog_lag(const struct raftlog_entry_id *leader, unsigned n_leader,
                     const struct raftlog_entry_id *target, unsigned n_target)
{
    if (n_target == 0) {
        return n_leader == 0 ? 0 : RAFTLOG_LAG_UNKNOWN;
    }
    for (unsigned end = n_leader; end >= n_target; end--) {
        if (memcmp(leader + end - n_target, target, sizeof *target * n_target) == 0) {
            return n_leader - end;
        }
    }
    return RAFTLOG_LAG_UNKNOWN;
}
