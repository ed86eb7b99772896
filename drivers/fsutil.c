/* File helpers for the drivers' state: atomic replace, lock files, directory removal. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drivers/driver_internal.h"
#include "lib/err.h"
#include "lib/mem.h"

#define RMTREE_MAX_DEPTH 256

static int fail_errno(char *errmsg, const char *what, const char *path)
{
    int e = errno;
    gerr_set(errmsg, "%s %s: %s", what, path, strerror(e));
    return gerr_from_errno(e);
}

static int write_full(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void fsync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : (size_t)(slash - path);
    if (n == 0 || n >= sizeof dir) {
        snprintf(dir, sizeof dir, "%s", n == 0 && slash != NULL ? "/" : ".");
    } else {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int driver__write_atomic(const char *path, const void *data, size_t len, unsigned mode, char *errmsg)
{
    char tmp[4096];
    int rv;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        gerr_set(errmsg, "path too long: %.200s", path);
        return GERR_INVAL;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
    if (fd < 0) {
        return fail_errno(errmsg, "create", tmp);
    }
    if (write_full(fd, data, len) != 0 || fsync(fd) != 0) {
        rv = fail_errno(errmsg, "write", tmp);
        goto err_after_open;
    }
    if (close(fd) != 0) {
        fd = -1;
        rv = fail_errno(errmsg, "close", tmp);
        goto err_after_open;
    }
    if (rename(tmp, path) != 0) {
        fd = -1;
        rv = fail_errno(errmsg, "rename to", path);
        goto err_after_open;
    }
    fsync_parent(path);
    return 0;

err_after_open:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    return rv;
}

int driver__lock_file(const char *path, int *fd, char *errmsg)
{
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd < 0) {
        return fail_errno(errmsg, "open lock", path);
    }
    while (flock(*fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            int rv = fail_errno(errmsg, "lock", path);
            close(*fd);
            *fd = -1;
            return rv;
        }
    }
    return 0;
}

int driver__mkdir(const char *path, unsigned mode, char *errmsg)
{
    if (mkdir(path, (mode_t)mode) == 0) {
        /* The umask may have removed bits the sandboxes need (search permission). */
        if (chmod(path, (mode_t)mode) != 0) {
            return fail_errno(errmsg, "chmod", path);
        }
        return 0;
    }
    if (errno != EEXIST) {
        return fail_errno(errmsg, "mkdir", path);
    }
    struct stat st;
    if (lstat(path, &st) != 0) {
        return fail_errno(errmsg, "stat", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        gerr_set(errmsg, "%s exists and is not a directory", path);
        return GERR_EXISTS;
    }
    return 0;
}

/* Empty the directory open as @fd (which this function closes). */
static int rm_contents(int fd, unsigned depth, const char *top, char *errmsg)
{
    DIR *dir = fdopendir(fd);
    int rv = 0;
    if (dir == NULL) {
        close(fd);
        return fail_errno(errmsg, "open directory below", top);
    }
    struct dirent *e;
    while (rv == 0 && (e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (unlinkat(dirfd(dir), e->d_name, 0) == 0) {
            continue;
        }
        if (errno != EISDIR && errno != EPERM) {
            rv = fail_errno(errmsg, "unlink below", top);
            break;
        }
        if (depth >= RMTREE_MAX_DEPTH) {
            gerr_set(errmsg, "%s: directories nested deeper than %u levels", top, RMTREE_MAX_DEPTH);
            rv = GERR_IO;
            break;
        }
        int child = openat(dirfd(dir), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child < 0) {
            rv = fail_errno(errmsg, "open below", top);
            break;
        }
        rv = rm_contents(child, depth + 1, top, errmsg);
        if (rv == 0 && unlinkat(dirfd(dir), e->d_name, AT_REMOVEDIR) != 0) {
            rv = fail_errno(errmsg, "rmdir below", top);
        }
        /* The directory changed under readdir: start over, which is safe because it only shrinks. */
        rewinddir(dir);
    }
    closedir(dir);
    return rv;
}

int driver__rmtree(const char *path, char *errmsg)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? 0 : fail_errno(errmsg, "stat", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        return unlink(path) == 0 || errno == ENOENT ? 0 : fail_errno(errmsg, "unlink", path);
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return fail_errno(errmsg, "open", path);
    }
    int rv = rm_contents(fd, 0, path, errmsg);
    if (rv == 0 && rmdir(path) != 0 && errno != ENOENT) {
        rv = fail_errno(errmsg, "rmdir", path);
    }
    return rv;
}
