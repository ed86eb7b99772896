/* The backup archive (store/archive.h). */
#include "store/archive.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/file.h"
#include "lib/mem.h"

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64 || s[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* Parse a decimal size without leading zeros (up to 2^53). */
static bool size_ok(const uint8_t *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 16 || (n > 1 && s[0] == '0')) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

int store_archive_parse(const uint8_t *data, size_t len, store_archive_file_cb cb, void *arg, char *errmsg)
{
    size_t magic = strlen(STORE_ARCHIVE_MAGIC);
    if (len < magic || memcmp(data, STORE_ARCHIVE_MAGIC, magic) != 0) {
        gerr_set(errmsg, "backup: not a Gantry backup (bad header)");
        return GERR_INVAL;
    }
    size_t off = magic;
    unsigned files = 0;
    for (;;) {
        if (len - off == 4 && memcmp(data + off, "END\n", 4) == 0) {
            return 0;
        }
        const uint8_t *nl = memchr(data + off, '\n', len - off < 100 ? len - off : 100);
        if (nl == NULL || nl - (data + off) < 5 || data[off] != 'F' || data[off + 1] != ' ') {
            gerr_set(errmsg, "backup: bad or truncated file header at offset %zu", off);
            return GERR_INVAL;
        }
        const uint8_t *name = data + off + 2;
        const uint8_t *sp = memchr(name, ' ', (size_t)(nl - name));
        uint64_t size;
        if (sp == NULL || !name_ok((const char *)name, (size_t)(sp - name)) ||
            !size_ok(sp + 1, (size_t)(nl - sp - 1), &size)) {
            gerr_set(errmsg, "backup: bad file header at offset %zu", off);
            return GERR_INVAL;
        }
        if (++files > STORE_ARCHIVE_MAX_FILES) {
            gerr_set(errmsg, "backup: more than %u files", STORE_ARCHIVE_MAX_FILES);
            return GERR_INVAL;
        }
        size_t body = (size_t)(nl - data) + 1;
        if (size > len - body || len - body - size < 1 || data[body + size] != '\n') {
            gerr_set(errmsg, "backup: file at offset %zu is truncated", off);
            return GERR_INVAL;
        }
        char fname[65];
        memcpy(fname, name, (size_t)(sp - name));
        fname[sp - name] = '\0';
        int rv = cb != NULL ? cb(fname, data + body, (size_t)size, arg) : 0;
        if (rv != 0) {
            return rv;
        }
        off = body + (size_t)size + 1;
    }
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int store_archive_pack_dir(const char *dir, struct buf *out, char *errmsg)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        int err = errno;
        gerr_set(errmsg, "backup: open %s: %s", dir, strerror(err));
        return gerr_from_errno(err);
    }
    char *names[STORE_ARCHIVE_MAX_FILES];
    unsigned n = 0;
    int rv = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if (n == STORE_ARCHIVE_MAX_FILES || !name_ok(e->d_name, strlen(e->d_name))) {
            gerr_set(errmsg, "backup: cannot archive %s/%s", dir, e->d_name);
            rv = GERR_INVAL;
            break;
        }
        names[n++] = mem_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_names);
    if (rv == 0) {
        buf_append(out, STORE_ARCHIVE_MAGIC, strlen(STORE_ARCHIVE_MAGIC));
    }
    for (unsigned i = 0; rv == 0 && i < n; i++) {
        char path[4096];
        char *content;
        size_t len;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rv = file_read_all(path, (size_t)1 << 34, &content, &len, errmsg);
        if (rv == 0) {
            buf_printf(out, "F %s %zu\n", names[i], len);
            buf_append(out, content, len);
            buf_append(out, "\n", 1);
            mem_free(content);
        }
    }
    if (rv == 0) {
        buf_append(out, "END\n", 4);
    }
    for (unsigned i = 0; i < n; i++) {
        mem_free(names[i]);
    }
    return rv;
}

struct unpack_ctx {
    const char *dir;
    char *errmsg;
};

static int write_one(const char *name, const uint8_t *data, size_t len, void *arg)
{
    struct unpack_ctx *u = arg;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", u->dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = errno;
        gerr_set(u->errmsg, "backup: create %s: %s", path, strerror(err));
        return gerr_from_errno(err);
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int err = errno;
            close(fd);
            gerr_set(u->errmsg, "backup: write %s: %s", path, strerror(err));
            return gerr_from_errno(err);
        }
        off += (size_t)w;
    }
    if (close(fd) != 0) {
        int err = errno;
        gerr_set(u->errmsg, "backup: close %s: %s", path, strerror(err));
        return gerr_from_errno(err);
    }
    return 0;
}

int store_archive_unpack(const uint8_t *data, size_t len, const char *dir, char *errmsg)
{
    int rv = store_archive_parse(data, len, NULL, NULL, errmsg); /* all or nothing */
    if (rv == 0) {
        struct unpack_ctx u = {.dir = dir, .errmsg = errmsg};
        rv = store_archive_parse(data, len, write_one, &u, errmsg);
    }
    return rv;
}
