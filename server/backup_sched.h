/* Scheduled backups by the reconciler lease holder (docs/operations.md, "Scheduled backups").
 *
 * A thread wakes every second. While this replica holds the reconciler lease (the @held callback)
 * and the newest scheduled backup in the directory is at least interval_s old (by the time in its
 * name, so neither a restart nor a lease moving to another replica sharing the directory takes an
 * extra one), it takes a backup through its own store client (store_backup_take: DUMP on the
 * leader), seals it with the key (store/sealed.h; cluster id, revision and schema version in the
 * header), writes it to a hidden temporary file in the directory, fsyncs it, renames it to
 * gantry-backup-<UTC time>-r<replica id>.gbk and fsyncs the directory. Then it prunes: of the files
 * named like that (nothing else in the directory is touched), the newest is always kept, then at
 * most keep_count in all, and none older than keep_age_hours (0: no age limit). A failed backup
 * leaves no file behind and is tried again after min(interval_s, 60) seconds; it is logged and
 * counted. `gantry cluster backup-verify` and `gantryd restore --backup-key-file` read the files.
 *
 * Ownership: the config's strings and the key are copied at start; @held and its argument must
 * stay valid until backup_sched_stop returns. */
#ifndef GANTRY_SERVER_BACKUP_SCHED_H
#define GANTRY_SERVER_BACKUP_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "store/client.h"

#define BACKUP_SCHED_PREFIX   "gantry-backup-"
#define BACKUP_SCHED_SUFFIX   ".gbk"
#define BACKUP_SCHED_NAME_MAX 64u

struct backup_sched_config {
    const char *dir;         /* an existing directory this process may write */
    const char *key_file;    /* the sealing key (store_sealed_key_load: owner-only file) */
    unsigned interval_s;     /* >= 1 */
    unsigned keep_count;     /* >= 1 */
    unsigned keep_age_hours; /* 0: no age limit */
    const char *scratch_dir; /* where the DUMP lands before it is packed (removed after) */
    const char *cluster_id;
    uint64_t replica_id;
    const struct store_client_config *store; /* copied */
    bool (*held)(void *arg);                 /* true while this replica holds the reconciler lease */
    void *held_arg;
};

struct backup_sched_stats {
    uint64_t successes, failures, pruned;
    int64_t last_success_ms;   /* Unix ms of the last backup written, 0: none yet */
    uint64_t last_duration_ms; /* of the last backup written */
    uint64_t last_size_bytes;  /* of the last backup written (the sealed file) */
};

struct backup_sched;

/* Check the directory (exists, is a directory, writable) and load the key, then start the thread.
 * Errors, with the reason in @errmsg (naming the config key): GERR_NOTFOUND, GERR_PERM, GERR_INVAL,
 * GERR_IO from the directory or key file; GERR_NOMEM. Nothing runs on error. */
int backup_sched_start(const struct backup_sched_config *cfg, struct backup_sched **out, char *errmsg);

/* Stop the thread (a backup in progress finishes first, bounded by the store client's timeouts);
 * after it @held is never called again, and stats and metrics still answer. Idempotent. NULL is
 * fine. */
void backup_sched_stop(struct backup_sched *s);

/* backup_sched_stop if needed, wipe the key, free. NULL is fine. */
void backup_sched_free(struct backup_sched *s);

void backup_sched_stats(struct backup_sched *s, struct backup_sched_stats *out);

/* The Prometheus series of @s (docs/metrics.md). */
void backup_sched_metrics(struct backup_sched *s, struct buf *out);

/* --- The pure parts, for tests --- */

/* The file name of a backup taken at @wall_ms by @replica_id into @out (BACKUP_SCHED_NAME_MAX
 * bytes): gantry-backup-20261206T140102.123Z-r2.gbk. */
void backup_sched_name(int64_t wall_ms, uint64_t replica_id, char out[BACKUP_SCHED_NAME_MAX]);

/* The time in a name written by backup_sched_name; false for any other name. */
bool backup_sched_parse_name(const char *name, int64_t *wall_ms);

/* Which of @n backups taken at @times (Unix ms, any order) to delete at @now_ms: @del[i] is set
 * for each. The newest is never deleted; beyond it, those past the @keep_count newest and those
 * older than @keep_age_ms (0: no age limit). Returns how many are marked. */
unsigned backup_sched_prune_plan(const int64_t *times, size_t n, int64_t now_ms, unsigned keep_count,
                                 int64_t keep_age_ms, bool *del);

#endif
