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
#include <sys/stat.h>
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

/* ---- The reader: what was scanned, kept (raftlog.h) */

struct seg_memo {
    char name[64];
    bool open;
    bool listed; /* named by the current pass's listing */
    dev_t dev;
    ino_t ino;
    off_t size; /* closed: with the modification time, the identity of the content scanned */
    struct timespec mtime;
    bool format_read;  /* the format word was read (and was 1) */
    bool complete;     /* closed: scanned to its end */
    uint64_t scanned;  /* the offset after the last complete, checked batch */
    uint64_t last_off; /* the last such batch's offset (0: none), and its header checksum */
    uint32_t last_crc;
    struct raftlog_entry_id *ids;
    size_t n, cap;
};

struct raftlog_reader {
    pthread_mutex_t mu;
    char *dir;
    struct seg_memo *memos;
    size_t n, cap;
    uint8_t *buf; /* one batch's header and data */
    size_t buf_cap;
};

struct raftlog_reader *raftlog_reader_new(const char *dir)
{
    struct raftlog_reader *r = mem_zalloc(sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->dir = mem_strdup(dir);
    return r;
}

void raftlog_reader_free(struct raftlog_reader *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        mem_free(r->memos[i].ids);
    }
    mem_free(r->memos);
    mem_free(r->buf);
    mem_free(r->dir);
    pthread_mutex_destroy(&r->mu);
    mem_free(r);
}

static void memo_reset(struct seg_memo *m)
{
    m->format_read = false;
    m->complete = false;
    m->scanned = 0;
    m->last_off = 0;
    m->last_crc = 0;
    m->n = 0;
}

/* 0 when all @n bytes at @off were read; 1 at the end of the file; -1 on an error. */
static int pread_full(int fd, void *p, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, (uint8_t *)p + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            return -1;
        }
        if (k == 0) {
            return 1;
        }
        got += (size_t)k;
    }
    return 0;
}

static uint8_t *reader_buf(struct raftlog_reader *r, size_t n)
{
    if (n > r->buf_cap) {
        r->buf_cap = n;
        r->buf = mem_realloc(r->buf, n);
    }
    return r->buf;
}

/* Read @m's batches on from m->scanned through @fd (@size bytes long), appending the ids of each
 * complete, checked batch; the first that is incomplete or fails a checksum ends the scan (for
 * now: the next call starts there again). 0; GERR_IO on a read error; GERR_PROTO for an unknown
 * format version. */
static int scan_on(struct raftlog_reader *r, struct seg_memo *m, int fd, uint64_t size)
{
    if (!m->format_read) {
        uint8_t w[8];
        int got = size >= 8 ? pread_full(fd, w, sizeof w, 0) : 1;
        if (got < 0) {
            return GERR_IO;
        }
        if (got > 0 || le64(w) == 0) {
            return 0; /* preallocated: nothing written yet */
        }
        if (le64(w) != 1) {
            return GERR_PROTO;
        }
        m->format_read = true;
        m->scanned = 8;
    }
    for (;;) {
        uint64_t off = m->scanned;
        if (off > size || size - off < 16) {
            return 0;
        }
        uint8_t head[16];
        int got = pread_full(fd, head, sizeof head, off);
        if (got != 0) {
            return got < 0 ? GERR_IO : 0;
        }
        uint32_t crc_header = le32(head), crc_data = le32(head + 4);
        uint64_t count = le64(head + 8), room = size - off - 8;
        if (count == 0 || count > (room - 8) / 16) {
            return 0; /* the end of what was written, or a batch still being written */
        }
        size_t header_len = 8 + 16 * (size_t)count;
        uint8_t *b = reader_buf(r, header_len);
        if ((got = pread_full(fd, b, header_len, off + 8)) != 0) {
            return got < 0 ? GERR_IO : 0;
        }
        if (raftlog_crc32(b, header_len, 0) != crc_header) {
            return 0;
        }
        uint64_t data_len = 0;
        for (uint64_t i = 0; i < count; i++) {
            data_len += le32(b + 8 + 16 * i + 12);
        }
        if (data_len > room - header_len) {
            return 0;
        }
        b = reader_buf(r, header_len + (size_t)data_len);
        if ((got = pread_full(fd, b + header_len, (size_t)data_len, off + 8 + header_len)) != 0) {
            return got < 0 ? GERR_IO : 0;
        }
        const uint8_t *data = b + header_len;
        if (raftlog_crc32(data, (size_t)data_len, 0) != crc_data) {
            return 0;
        }
        if (m->n + count > m->cap) {
            m->cap = (m->n + count) * 2;
            m->ids = mem_realloc(m->ids, sizeof *m->ids * m->cap);
        }
        size_t at = 0;
        for (uint64_t e = 0; e < count; e++) {
            const uint8_t *h = b + 8 + 16 * e;
            uint32_t esize = le32(h + 12);
            m->ids[m->n++] =
                (struct raftlog_entry_id){.term = le64(h),
                                          .size = esize,
                                          .crc = count == 1 ? crc_data : raftlog_crc32(data + at, esize, 0)};
            at += esize;
        }
        m->last_off = off;
        m->last_crc = crc_header;
        m->scanned = off + 8 + header_len + data_len;
    }
}

static struct seg_memo *memo_find(struct raftlog_reader *r, const struct segment *s)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->memos[i].open == s->open && strcmp(r->memos[i].name, s->name) == 0) {
            return &r->memos[i];
        }
    }
    if (r->n == r->cap) {
        r->cap = r->cap == 0 ? 16 : r->cap * 2;
        r->memos = mem_realloc(r->memos, sizeof *r->memos * r->cap);
    }
    struct seg_memo *m = &r->memos[r->n++];
    memset(m, 0, sizeof *m);
    memcpy(m->name, s->name, sizeof m->name);
    m->open = s->open;
    return m;
}

/* Bring @m up to date with the file @path: 0; GERR_BUSY when it vanished; GERR_IO; GERR_PROTO. */
static int memo_refresh(struct raftlog_reader *r, struct seg_memo *m, const char *path, char *errmsg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return GERR_BUSY; /* closed (renamed) or removed since the listing */
        }
        gerr_set(errmsg, "raft log %s: %s", path, strerror(errno));
        return GERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        gerr_set(errmsg, "raft log %s: %s", path, strerror(errno));
        close(fd);
        return GERR_IO;
    }
    bool same = m->dev == st.st_dev && m->ino == st.st_ino;
    if (!m->open) {
        same = same && m->complete && m->size == st.st_size && m->mtime.tv_sec == st.st_mtim.tv_sec &&
               m->mtime.tv_nsec == st.st_mtim.tv_nsec;
        if (same) {
            close(fd);
            return 0;
        }
    } else if (same && m->last_off != 0) {
        /* An open segment only grows while it keeps its name; its format word and last batch must
         * still be there. */
        uint8_t c[4], w[8];
        same = (uint64_t)st.st_size >= m->scanned && pread_full(fd, c, sizeof c, m->last_off) == 0 &&
               le32(c) == m->last_crc && pread_full(fd, w, sizeof w, 0) == 0 && le64(w) == 1;
    }
    if (!same) {
        memo_reset(m);
        m->dev = st.st_dev;
        m->ino = st.st_ino;
    }
    int rv = scan_on(r, m, fd, (uint64_t)st.st_size);
    close(fd);
    if (rv == GERR_PROTO) {
        gerr_set(errmsg, "raft log %s: unknown segment format", path);
        memo_reset(m);
        return rv;
    }
    if (rv != 0) {
        gerr_set(errmsg, "raft log %s: read failed", path);
        memo_reset(m);
        return rv;
    }
    if (!m->open) {
        m->complete = true;
        m->size = st.st_size;
        m->mtime = st.st_mtim;
    }
    return 0;
}

static int reader_once(struct raftlog_reader *r, struct raftlog_entry_id *out, unsigned max, unsigned *n,
                       char *errmsg)
{
    struct segment *segs;
    size_t n_segs;
    int rv = list_segments(r->dir, &segs, &n_segs, errmsg);
    if (rv != 0) {
        return rv;
    }
    /* Forget the segments that are gone; find or make a memo for each listed one. */
    for (size_t i = 0; i < r->n; i++) {
        r->memos[i].listed = false;
    }
    for (size_t i = 0; i < n_segs; i++) {
        memo_find(r, &segs[i])->listed = true;
    }
    for (size_t i = 0; i < r->n;) {
        if (!r->memos[i].listed) {
            mem_free(r->memos[i].ids);
            r->memos[i] = r->memos[--r->n];
        } else {
            i++;
        }
    }
    if (n_segs == 0) {
        mem_free(segs);
        gerr_set(errmsg, "raft log %s: no segment", r->dir);
        return GERR_NOTFOUND;
    }
    /* Newest segment first; each one's ids fill @out from its end. */
    size_t pos = max;
    for (size_t i = n_segs; i-- > 0 && pos > 0;) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", r->dir, segs[i].name);
        struct seg_memo *m = memo_find(r, &segs[i]);
        if ((rv = memo_refresh(r, m, path, errmsg)) != 0) {
            break;
        }
        size_t take = m->n < pos ? m->n : pos;
        if (take > 0) {
            memcpy(out + pos - take, m->ids + m->n - take, sizeof *out * take);
            pos -= take;
        }
    }
    mem_free(segs);
    if (rv == 0) {
        *n = max - (unsigned)pos;
        memmove(out, out + pos, sizeof *out * *n);
    }
    return rv;
}

int raftlog_reader_tail(struct raftlog_reader *r, struct raftlog_entry_id *out, unsigned max, unsigned *n,
                        char *errmsg)
{
    *n = 0;
    int rv = GERR_BUSY;
    pthread_mutex_lock(&r->mu);
    for (int attempt = 0; attempt < ATTEMPTS && rv == GERR_BUSY; attempt++) {
        rv = reader_once(r, out, max, n, errmsg);
    }
    pthread_mutex_unlock(&r->mu);
    if (rv == GERR_BUSY) {
        gerr_set(errmsg, "raft log %s: segments kept changing while read", r->dir);
        rv = GERR_IO;
    }
    return rv;
}
