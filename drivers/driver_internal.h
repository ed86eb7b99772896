/* What the drivers share behind drivers/driver.h: the ops table every driver fills, the base struct
 * every driver embeds first, and helpers for epochs, results, driver_config checks and files.
 * Nothing outside drivers/ includes this header (tests and fuzzers excepted). */
#ifndef GANTRY_DRIVERS_DRIVER_INTERNAL_H
#define GANTRY_DRIVERS_DRIVER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drivers/driver.h"
#include "lib/buf.h"

/* One function per operation of driver.h. The public wrappers have already checked the shared
 * argument rules (epoch > 0, namespace and id formats, the spec's shared limits) and hold the
 * driver's mutex. Results are zeroed on entry; ops fill them only on success. */
struct driver_ops {
    void (*capabilities)(struct driver *d, struct driver_caps *caps);
    int (*validate)(struct driver *d, const struct driver_sandbox_spec *spec, const char *const *allowed,
                    char *errmsg);
    int (*create)(struct driver *d, uint64_t epoch, const struct driver_sandbox_spec *spec,
                  struct driver_sandbox *out, char *errmsg);
    int (*get)(struct driver *d, uint64_t epoch, const char *ns, const char *id, struct driver_sandbox *out,
               char *errmsg);
    int (*list)(struct driver *d, uint64_t epoch, const char *ns, struct driver_sandbox_list *out,
                char *errmsg);
    int (*delete)(struct driver *d, uint64_t epoch, const char *ns, const char *id, char *errmsg);
    int (*ensure_namespace)(struct driver *d, uint64_t epoch, const char *ns, char *errmsg);
    /* NULL: caps.credentials is false (the wrapper answers GERR_INVAL). */
    int (*update_credentials)(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                              const struct driver_credential *creds, size_t n, char *errmsg);
    int (*delete_namespace)(struct driver *d, uint64_t epoch, const char *ns, char *errmsg);
    /* NULL: caps.logs is false. Called without the driver's mutex (it reads files of its own). */
    int (*logs_open)(struct driver *d, const char *ns, const char *id, const struct driver_log_query *q,
                     struct driver_log **out, char *errmsg);
    /* NULL: caps.exec is false. Called without the driver's mutex. */
    int (*exec_start)(struct driver *d, const char *ns, const char *id, const struct driver_exec_spec *spec,
                      struct driver_exec **out, char *errmsg);
    /* NULL: caps.port_forward is false. Called without the driver's mutex. */
    int (*port_connect)(struct driver *d, const char *ns, const char *id, uint16_t port,
                        struct driver_exec **out, char *errmsg);
    /* NULL: caps.pools is false (the wrappers answer GERR_UNAVAILABLE). */
    int (*pool_apply)(struct driver *d, uint64_t epoch, const struct driver_pool_spec *spec,
                      struct driver_pool *out, char *errmsg);
    int (*pool_delete)(struct driver *d, uint64_t epoch, const char *k8s_namespace, const char *name,
                       const char *id, char *errmsg);
    int (*pool_list)(struct driver *d, uint64_t epoch, struct driver_pool_list *out, char *errmsg);
    void (*free)(struct driver *d);
};

/* An exec: each driver embeds this first. */
struct driver_exec_ops {
    void (*fds)(struct driver_exec *x, int *in, int *out, int *err);
    void (*close_stdin)(struct driver_exec *x);
    int (*resize)(struct driver_exec *x, uint16_t rows, uint16_t cols);
    int (*signal)(struct driver_exec *x, int sig);
    int (*status)(struct driver_exec *x, int *exit_code, int *signal);
    void (*close)(struct driver_exec *x);
};
struct driver_exec {
    const struct driver_exec_ops *ops;
};

/* A log reader: each driver embeds this first. */
struct driver_log_ops {
    int (*next)(struct driver_log *l, uint8_t *buf, size_t cap, size_t *n, uint64_t *ts_ms, char *errmsg);
    void (*close)(struct driver_log *l);
};
struct driver_log {
    const struct driver_log_ops *ops;
};

struct driver {
    const struct driver_ops *ops;
    pthread_mutex_t mu; /* serialises every call on this instance */
};

void driver__init(struct driver *d, const struct driver_ops *ops);
void driver__close(struct driver *d); /* destroys the mutex; the driver frees its own struct */

/* The fencing rule against a mark kept by the caller: @epoch < *@newest is DRIVER_ERR_STALE (the
 * message names both epochs and @what); otherwise *@newest = max(*@newest, @epoch) and 0. */
int driver__epoch_check(uint64_t epoch, uint64_t *newest, const char *what, char *errmsg);

/* Fill @out with copies of the strings (NULL message becomes ""). */
void driver__sandbox_fill(struct driver_sandbox *out, const char *id, const char *ns, const char *name,
                          enum driver_phase phase, const char *handle, const char *message, uint64_t epoch,
                          uint64_t created_at_ms);

/* Append a zeroed item to @l and return it. */
struct driver_sandbox *driver__list_push(struct driver_sandbox_list *l);

/* The driver_config rule: every key of @spec must be in @known (else GERR_INVAL naming the known
 * keys) and, when @allowed is not NULL, in @allowed (else GERR_PERM naming the allowed keys). */
int driver__check_config_keys(const struct driver_sandbox_spec *spec, const char *driver_name,
                              const char *const *known, const char *const *allowed, char *errmsg);

/* Kubernetes label syntax (also used for the other drivers' labels, so a spec moves between
 * drivers): a key is [prefix/]name, prefix a DNS subdomain, name 1..63 of [A-Za-z0-9._-] starting
 * and ending alphanumeric; a value 0..63 of the same characters, starting and ending alphanumeric. */
bool driver__label_key_ok(const char *key);
bool driver__label_value_ok(const char *value);

/* True if @s is 1..@max bytes of printable ASCII (0x20..0x7e), with no space when @no_space. */
bool driver__printable(const char *s, size_t max, bool no_space);

/* Append "a, b, c" (the NULL-terminated @list) to @b; "(none)" when empty. */
void driver__join(struct buf *b, const char *const *list);

/* True if @key is in the NULL-terminated @list. */
bool driver__in_list(const char *const *list, const char *key);

/* Unix milliseconds from the real clock. */
uint64_t driver__now_ms(void);

/* ---- Files (the process and fake drivers' state). */

/* Write @len bytes to @path atomically: a temporary file beside it, fsync, rename, fsync of the
 * directory. Readers see the old or the new content, never a mix. 0 or GERR_IO/GERR_PERM/... */
int driver__write_atomic(const char *path, const void *data, size_t len, unsigned mode, char *errmsg);

/* Open (creating, mode 0600) and flock(LOCK_EX) @path; the descriptor is the lock (close to
 * release). 0 with *@fd set, or an error. */
int driver__lock_file(const char *path, int *fd, char *errmsg);

/* Create directory @path with @mode if missing (its parent must exist). */
int driver__mkdir(const char *path, unsigned mode, char *errmsg);

/* Remove @path and everything below it without following symbolic links (a sandbox may have
 * planted links in its workspace). Absent is fine. */
int driver__rmtree(const char *path, char *errmsg);

#endif
