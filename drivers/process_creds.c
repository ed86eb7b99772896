/* The process driver's credential files on a tmpfs. See process_creds.h. */
#include "drivers/process_creds.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "drivers/driver_internal.h"
#include "lib/err.h"
#include "lib/mem.h"

#define TMPFS_MAGIC_ 0x01021994
#define RAMFS_MAGIC_ 0x858458f6

static int fail(char *errmsg, const char *what, const char *path)
{
    int e = errno;
    gerr_set(errmsg, "%s %s: %s", what, path, strerror(e));
    return gerr_from_errno(e);
}

void pcreds_default_root(const char *state_dir, char *out, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = state_dir; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 16777619u;
    }
    snprintf(out, len, "/dev/shm/gantry-credentials-%lu-%08x", (unsigned long)geteuid(), (unsigned)h);
}

int pcreds_prepare(const char *root, char *errmsg)
{
    if (mkdir(root, 0711) != 0 && errno != EEXIST) {
        return fail(errmsg, "mkdir", root);
    }
    struct stat st;
    if (lstat(root, &st) != 0) {
        return fail(errmsg, "stat", root);
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
        gerr_set(errmsg,
                 "credentials directory %s is not a directory of this user that only it may write: refusing "
                 "to keep credentials there",
                 root);
        return GERR_PERM;
    }
    struct statfs fs;
    if (statfs(root, &fs) != 0) {
        return fail(errmsg, "statfs", root);
    }
    if (fs.f_type != TMPFS_MAGIC_ && fs.f_type != RAMFS_MAGIC_) {
        gerr_set(errmsg, "credentials directory %s is not on a tmpfs: credentials are kept in memory only",
                 root);
        return GERR_PERM;
    }
    return 0;
}

char *pcreds_dir(const char *root, const char *id)
{
    size_t n = strlen(root) + 1 + strlen(id) + 1;
    char *out = mem_alloc(n);
    snprintf(out, n, "%s/%s", root, id);
    return out;
}

/* A directory @path (0700) owned as asked; an existing one is kept (its owner fixed). */
static int own_dir(const char *path, bool chown_to, uid_t uid, gid_t gid, char *errmsg)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        return fail(errmsg, "mkdir", path);
    }
    struct stat st;
    if (lstat(path, &st) != 0) {
        return fail(errmsg, "stat", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        gerr_set(errmsg, "%s is not a directory", path);
        return GERR_IO;
    }
    if (chown_to && chown(path, uid, gid) != 0) {
        return fail(errmsg, "chown", path);
    }
    return 0;
}

/* Replace @path with @value: a new file (0400, owned as asked) renamed over it. */
static int put_file(const char *path, const char *value, bool chown_to, uid_t uid, gid_t gid, char *errmsg)
{
    size_t n = strlen(path) + 16;
    char *tmp = mem_alloc(n);
    snprintf(tmp, n, "%s.~new", path);
    (void)unlink(tmp); /* a leftover of an interrupted write */
    int rv = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0) {
        rv = fail(errmsg, "create", tmp);
        goto out;
    }
    size_t len = strlen(value), done = 0;
    while (done < len) {
        ssize_t w = write(fd, value + done, len - done);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            rv = fail(errmsg, "write", tmp);
            break;
        }
        done += (size_t)w;
    }
    if (rv == 0 && chown_to && fchown(fd, uid, gid) != 0) {
        rv = fail(errmsg, "chown", tmp);
    }
    close(fd);
    if (rv == 0 && rename(tmp, path) != 0) {
        rv = fail(errmsg, "rename", tmp);
    }
    if (rv != 0) {
        (void)unlink(tmp);
    }
out:
    mem_free(tmp);
    return rv;
}

static bool in_set(const struct driver_credential *c, size_t n, const char *provider, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(c[i].provider, provider) == 0 && (key == NULL || strcmp(c[i].key, key) == 0)) {
            return true;
        }
    }
    return false;
}

/* Remove what @dir holds that the set does not: provider directories (@provider NULL) or a
 * provider's files. */
static int prune(const char *dir, const char *provider, const struct driver_credential *c, size_t n,
                 char *errmsg)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return errno == ENOENT ? 0 : fail(errmsg, "opendir", dir);
    }
    int rv = 0;
    for (struct dirent *e = readdir(d); e != NULL && rv == 0; e = readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        bool keep = provider == NULL ? in_set(c, n, e->d_name, NULL) : in_set(c, n, provider, e->d_name);
        if (!keep) {
            size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
            char *path = mem_alloc(len);
            snprintf(path, len, "%s/%s", dir, e->d_name);
            rv = driver__rmtree(path, errmsg);
            mem_free(path);
        }
    }
    closedir(d);
    return rv;
}

int pcreds_write(const char *root, const char *id, bool chown_to, uid_t uid, gid_t gid,
                 const struct driver_credential *c, size_t n, char *errmsg)
{
    char *dir = pcreds_dir(root, id);
    int rv = own_dir(dir, chown_to, uid, gid, errmsg);
    for (size_t i = 0; rv == 0 && i < n; i++) {
        size_t len = strlen(dir) + 1 + strlen(c[i].provider) + 1 + strlen(c[i].key) + 1;
        char *pdir = mem_alloc(len), *file = mem_alloc(len);
        snprintf(pdir, len, "%s/%s", dir, c[i].provider);
        snprintf(file, len, "%s/%s/%s", dir, c[i].provider, c[i].key);
        rv = own_dir(pdir, chown_to, uid, gid, errmsg);
        if (rv == 0) {
            rv = put_file(file, c[i].value, chown_to, uid, gid, errmsg);
        }
        mem_free(pdir);
        mem_free(file);
    }
    if (rv == 0) {
        rv = prune(dir, NULL, c, n, errmsg);
    }
    for (size_t i = 0; rv == 0 && i < n; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++) {
            first = first && strcmp(c[j].provider, c[i].provider) != 0;
        }
        if (first) {
            size_t len = strlen(dir) + 1 + strlen(c[i].provider) + 1;
            char *pdir = mem_alloc(len);
            snprintf(pdir, len, "%s/%s", dir, c[i].provider);
            rv = prune(pdir, c[i].provider, c, n, errmsg);
            mem_free(pdir);
        }
    }
    mem_free(dir);
    return rv;
}

int pcreds_remove(const char *root, const char *id, char *errmsg)
{
    char *dir = pcreds_dir(root, id);
    int rv = driver__rmtree(dir, errmsg);
    mem_free(dir);
    return rv;
}
