/* The process driver's credential files (drivers/driver.h, struct driver_credential): plaintext
 * kept on a tmpfs outside the state directory, never on a disk, and bound read-only into the
 * sandbox at DRIVER_CREDENTIALS_DIR.
 *
 *   <root>/                   0711, owned by this process's user; must be on a tmpfs (or ramfs)
 *   <root>/<id>/              0700, owned by the sandbox's uid/gid: bound read-only into sandbox <id>
 *   <root>/<id>/<provider>/   0700, the same owner
 *   <root>/<id>/<provider>/<key>  0400, the same owner: the value, nothing else
 *
 * The root's default is "/dev/shm/gantry-credentials-<euid>-<hash of the state directory>", so every
 * replica of one host sharing a state directory finds the same files (the process driver's
 * replicas adopt each other's sandboxes). A root that exists but is a symbolic link, not a
 * directory, not owned by this user, or writable by others is refused (the parent may be
 * world-writable, as /dev/shm is). Files are replaced by rename, so a reader inside the sandbox sees
 * the old value or the new one, never a mix.
 *
 * Nothing here logs, returns or puts into a message a credential value. Not thread-safe: the
 * process driver calls it under its mutex and state-directory lock. */
#ifndef GANTRY_DRIVERS_PROCESS_CREDS_H
#define GANTRY_DRIVERS_PROCESS_CREDS_H

#include <stddef.h>
#include <sys/types.h>

#include "drivers/driver.h"

/* The default root for state directory @state_dir into @out (@len bytes). */
void pcreds_default_root(const char *state_dir, char *out, size_t len);

/* Make @root if missing (0711) and check it: ours, a directory, not writable by others, on a tmpfs.
 * 0, or GERR_PERM (not ours, or not a tmpfs: the message says which) or the errno's code. */
int pcreds_prepare(const char *root, char *errmsg);

/* The directory of sandbox @id (heap; mem_free). */
char *pcreds_dir(const char *root, const char *id);

/* Write the whole set @c (@n entries) for sandbox @id: each file replaced atomically, owned by
 * @uid/@gid when @chown_to is true, and every file or provider directory of @id not in the set
 * removed. Entries are checked by the caller (driver.c). 0 or the errno's code, with the path in
 * @errmsg. */
int pcreds_write(const char *root, const char *id, bool chown_to, uid_t uid, gid_t gid,
                 const struct driver_credential *c, size_t n, char *errmsg);

/* Remove everything of sandbox @id (0 also when there is nothing). */
int pcreds_remove(const char *root, const char *id, char *errmsg);

#endif
