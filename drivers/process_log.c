/* The process driver's per-sandbox output log (see process_log.h). */
#include "drivers/process_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/mem.h"

#define PATH_CAP 4096

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

int plog_header_decode(const uint8_t *p, size_t len, uint64_t *ts, uint32_t *n, uint32_t *flags)
{
    if (len < PLOG_HEADER) {
        return GERR_BUSY;
    }
    *ts = get_le(p, 8);
    *n = (uint32_t)get_le(p + 8, 4);
    *flags = (uint32_t)get_le(p + 12, 4);
    if (*n > PLOG_CHUNK_MAX || (*flags & ~PLOG_FLAG_END) != 0 || ((*flags & PLOG_FLAG_END) && *n != 0)) {
        return GERR_PROTO;
    }
    return 0;
}

/* ---- The pump (async-signal-safe calls only) */

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void encode_header(uint8_t *h, uint32_t n, uint32_t flags)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    put_le(h, (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u, 8);
    put_le(h + 8, n, 4);
    put_le(h + 12, flags, 4);
}

void plog_pump(int in_fd, const char *path, uint64_t max_file_bytes)
{
    static uint8_t rec[PLOG_HEADER + PLOG_CHUNK_MAX]; /* the pump is a process of its own */
    char old[PATH_CAP];
    size_t plen = strlen(path);
    if (plen + 3 > sizeof old) {
        return;
    }
    memcpy(old, path, plen);
    memcpy(old + plen, ".1", 3);
    if (max_file_bytes < PLOG_FILE_MIN) {
        max_file_bytes = PLOG_FILE_MIN;
    }
    unlink(old);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        return;
    }
    uint64_t size = 0;
    for (;;) {
        ssize_t r = read(in_fd, rec + PLOG_HEADER, PLOG_CHUNK_MAX);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        if (size > 0 && size + PLOG_HEADER + (uint64_t)r > max_file_bytes) {
            /* Rotate: readers holding the old file finish it, then find the new one by name. */
            int nfd = -1;
            if (rename(path, old) == 0) {
                nfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
            }
            if (nfd < 0) {
                break; /* the log was removed (the sandbox is being deleted) */
            }
            close(fd);
            fd = nfd;
            size = 0;
        }
        encode_header(rec, (uint32_t)r, 0);
        if (!write_all(fd, rec, PLOG_HEADER + (size_t)r)) {
            break;
        }
        size += PLOG_HEADER + (uint64_t)r;
    }
    encode_header(rec, 0, PLOG_FLAG_END);
    (void)write_all(fd, rec, PLOG_HEADER);
    close(fd);
}

/* ---- Readers */

struct plog_reader {
    char *path;
    char *old; /* <path>.1 */
    int fd;
    ino_t ino;
    uint64_t off;
    bool ended;
    uint64_t skip_lines; /* newlines still to pass before output starts (tail) */
    uint64_t since_ms;
};

static int open_ro(const char *path, ino_t *ino)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        *ino = st.st_ino;
    }
    return fd;
}

/* Read the record at @off of @fd: 0 with the header and (if @buf) the payload; GERR_BUSY for a
 * partial record or the end of the file; GERR_PROTO; GERR_IO. */
static int read_record(int fd, uint64_t off, uint8_t *buf, uint64_t *ts, uint32_t *n, uint32_t *flags,
                       char *errmsg)
{
    uint8_t h[PLOG_HEADER];
    ssize_t r = pread(fd, h, sizeof h, (off_t)off);
    if (r < 0) {
        gerr_set(errmsg, "read the sandbox log: %s", strerror(errno));
        return GERR_IO;
    }
    int rv = plog_header_decode(h, (size_t)r, ts, n, flags);
    if (rv == GERR_PROTO) {
        gerr_set(errmsg, "the sandbox log is corrupt at offset %llu", (unsigned long long)off);
        return rv;
    }
    if (rv != 0 || *n == 0 || buf == NULL) {
        if (rv == 0 && buf == NULL && *n > 0) {
            struct stat st; /* a header whose payload is not all there yet is partial */
            if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < off + PLOG_HEADER + *n) {
                return GERR_BUSY;
            }
        }
        return rv;
    }
    r = pread(fd, buf, *n, (off_t)(off + PLOG_HEADER));
    if (r < 0) {
        gerr_set(errmsg, "read the sandbox log: %s", strerror(errno));
        return GERR_IO;
    }
    return (size_t)r < *n ? GERR_BUSY : 0;
}

/* Count the lines of records at or after @since_ms in @path (0 if absent). */
static int count_lines(const char *path, uint64_t since_ms, uint8_t *buf, uint64_t *lines, bool *open_line,
                       char *errmsg)
{
    ino_t ino = 0;
    int fd = open_ro(path, &ino), rv = 0;
    if (fd < 0) {
        return errno == ENOENT ? 0 : GERR_IO;
    }
    uint64_t off = 0, ts;
    uint32_t n, flags;
    while ((rv = read_record(fd, off, buf, &ts, &n, &flags, errmsg)) == 0) {
        if (ts >= since_ms) {
            for (uint32_t i = 0; i < n; i++) {
                *lines += buf[i] == '\n';
            }
            if (n > 0) {
                *open_line = buf[n - 1] != '\n';
            }
        }
        off += PLOG_HEADER + n;
    }
    close(fd);
    return rv == GERR_BUSY ? 0 : rv;
}

int plog_open(const char *path, const struct plog_query *q, struct plog_reader **out, char *errmsg)
{
    size_t plen = strlen(path);
    if (plen + 3 > PATH_CAP) {
        gerr_set(errmsg, "log path too long");
        return GERR_INVAL;
    }
    char old[PATH_CAP];
    snprintf(old, sizeof old, "%s.1", path);
    struct plog_reader *r = mem_zalloc(sizeof *r);
    r->path = mem_strdup(path);
    r->old = mem_strdup(old);
    r->since_ms = q->since_ms;
    r->fd = open_ro(old, &r->ino);
    if (r->fd < 0) {
        r->fd = open_ro(path, &r->ino);
    }
    if (r->fd < 0) {
        int e = errno;
        plog_close(r);
        gerr_set(errmsg, "no log: %s", strerror(e));
        return e == ENOENT ? GERR_NOTFOUND : GERR_IO;
    }
    if (q->tail_lines >= 0) {
        uint8_t *buf = mem_alloc(PLOG_CHUNK_MAX);
        uint64_t lines = 0;
        bool open_line = false;
        int rv = count_lines(old, q->since_ms, buf, &lines, &open_line, errmsg);
        open_line = false; /* only the last record of all decides */
        if (rv == 0) {
            rv = count_lines(path, q->since_ms, buf, &lines, &open_line, errmsg);
        }
        mem_free(buf);
        if (rv != 0) {
            plog_close(r);
            return rv;
        }
        lines += open_line;
        r->skip_lines = lines > (uint64_t)q->tail_lines ? lines - (uint64_t)q->tail_lines : 0;
    }
    *out = r;
    return 0;
}

/* At the end of the file being read: move to the next file if ours was rotated away.
 *
 * Ours still linked (it is <path>.1 now): the next one is the current file, or none yet between the
 * pump's rename and its new file. Ours unlinked: either a second rotation replaced it as <path>.1,
 * and the file that replaced it comes next, or the log was removed. plog_remove unlinks <path>.1
 * before <path>, so a <path>.1 seen here is never older than ours; with neither name left, the
 * sandbox was deleted. A reader more than a whole file behind skips what was rotated away. */
static int at_end(struct plog_reader *r, char *errmsg)
{
    struct stat cur, mine, old;
    if (fstat(r->fd, &mine) != 0) {
        gerr_set(errmsg, "stat the sandbox log: %s", strerror(errno));
        return GERR_IO;
    }
    bool have_cur = stat(r->path, &cur) == 0;
    if (have_cur && cur.st_ino == r->ino) {
        return GERR_BUSY; /* the newest file: wait for more */
    }
    const char *next = r->path;
    if (mine.st_nlink == 0 && stat(r->old, &old) == 0 && old.st_ino != r->ino) {
        next = r->old;
    } else if (!have_cur) {
        if (mine.st_nlink == 0) {
            gerr_set(errmsg, "the sandbox's log was removed (the sandbox was deleted)");
            return GERR_NOTFOUND;
        }
        return GERR_BUSY; /* between the pump's rename and its new file */
    }
    ino_t ino = 0;
    int fd = open_ro(next, &ino);
    if (fd < 0) {
        return GERR_BUSY; /* renamed or removed since: look again */
    }
    close(r->fd);
    r->fd = fd;
    r->ino = ino;
    r->off = 0;
    return 0;
}

int plog_next(struct plog_reader *r, uint8_t *buf, size_t *n, uint64_t *ts, char *errmsg)
{
    for (;;) {
        if (r->ended) {
            return GERR_CLOSED;
        }
        uint32_t len, flags;
        int rv = read_record(r->fd, r->off, buf, ts, &len, &flags, errmsg);
        if (rv == GERR_BUSY) {
            if ((rv = at_end(r, errmsg)) != 0) {
                return rv;
            }
            continue;
        }
        if (rv != 0) {
            return rv;
        }
        r->off += PLOG_HEADER + len;
        if (flags & PLOG_FLAG_END) {
            struct stat st;
            if (fstat(r->fd, &st) == 0 && st.st_nlink == 0) {
                /* Killed by a delete, whose removal of the files came before we read this far. */
                gerr_set(errmsg, "the sandbox's log was removed (the sandbox was deleted)");
                return GERR_NOTFOUND;
            }
            r->ended = true;
            continue;
        }
        if (*ts < r->since_ms) {
            continue;
        }
        size_t start = 0;
        while (r->skip_lines > 0 && start < len) {
            if (buf[start++] == '\n') {
                r->skip_lines--;
            }
        }
        if (start == len) {
            continue;
        }
        if (start > 0) {
            memmove(buf, buf + start, len - start);
        }
        *n = len - start;
        return 0;
    }
}

void plog_close(struct plog_reader *r)
{
    if (r == NULL) {
        return;
    }
    if (r->fd >= 0) {
        close(r->fd);
    }
    mem_free(r->path);
    mem_free(r->old);
    mem_free(r);
}

void plog_tail_text(const char *path, unsigned wait_end_ms, char *buf, size_t len)
{
    buf[0] = '\0';
    if (len < 2) {
        return;
    }
    uint8_t *chunk = mem_alloc(PLOG_CHUNK_MAX);
    struct plog_query q = {.tail_lines = -1};
    struct plog_reader *r = NULL;
    size_t have = 0;
    char e[GERR_MSG_SIZE];
    for (unsigned waited = 0;; waited += 10) {
        int rv = 0;
        if (r == NULL && (rv = plog_open(path, &q, &r, e)) != 0) {
            break;
        }
        size_t n = 0;
        uint64_t ts;
        while ((rv = plog_next(r, chunk, &n, &ts, e)) == 0) {
            /* Keep the last len - 1 bytes of everything. */
            if (n >= len - 1) {
                memcpy(buf, chunk + n - (len - 1), len - 1);
                have = len - 1;
            } else {
                size_t keep = have + n > len - 1 ? len - 1 - n : have;
                memmove(buf, buf + have - keep, keep);
                memcpy(buf + keep, chunk, n);
                have = keep + n;
            }
        }
        if (rv != GERR_BUSY || waited >= wait_end_ms) {
            break;
        }
        struct timespec ten = {0, 10 * 1000000L};
        nanosleep(&ten, NULL);
    }
    plog_close(r);
    mem_free(chunk);
    buf[have] = '\0';
    for (char *c = buf; *c != '\0'; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) {
            *c = ' ';
        }
    }
    for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' '; n--) {
        buf[n - 1] = '\0';
    }
}

void plog_remove(const char *path)
{
    char old[PATH_CAP];
    snprintf(old, sizeof old, "%s.1", path);
    unlink(old); /* the older file first: see at_end */
    unlink(path);
}
