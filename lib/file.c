#include "lib/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/mem.h"

int file_read_all(const char *path, size_t max, char **out, size_t *len, char *errmsg)
{
    struct stat st;
    int rv;

    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "%s: %s", path, strerror(errno));
        return rv;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        gerr_set(errmsg, "%s: not a regular file", path);
        close(fd);
        return GERR_INVAL;
    }
    if ((size_t)st.st_size > max) {
        gerr_set(errmsg, "%s: %lld bytes is more than the %zu allowed", path, (long long)st.st_size, max);
        close(fd);
        return GERR_TOOBIG;
    }
    size_t cap = (size_t)st.st_size;
    char *buf = mem_alloc(cap + 1);
    size_t n = 0;
    for (;;) {
        /* Read until EOF, not st_size: the file may change under us; never past the cap. */
        if (n == cap) {
            char extra;
            ssize_t r = read(fd, &extra, 1);
            if (r == 0) {
                break;
            }
            if (r < 0 && errno == EINTR) {
                continue;
            }
            gerr_set(errmsg, "%s: %s", path, r < 0 ? strerror(errno) : "grew while being read");
            rv = r < 0 ? gerr_from_errno(errno) : GERR_IO;
            mem_free(buf);
            close(fd);
            return rv;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rv = gerr_from_errno(errno);
            gerr_set(errmsg, "%s: %s", path, strerror(errno));
            mem_free(buf);
            close(fd);
            return rv;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len != NULL) {
        *len = n;
    }
    return 0;
}
