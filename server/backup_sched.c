/* Scheduled backups by the reconciler lease holder. See backup_sched.h.
 *
 * Happy path, once per interval on the lease holder: DUMP through the store client -> archive in
 * memory -> sealed into <dir>/.<name>.partial (0600) -> fsync -> rename to <name> -> fsync the
 * directory -> prune. Failure modes: no leader or a DUMP that fails, a full or unwritable disk,
 * losing the lease while the backup runs (the file is dropped: only the holder writes backups).
 * Each unlinks the partial file, logs the reason and counts a failure; the next try is
 * min(interval_s, 60) seconds later. */
#include "server/backup_sched.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "store/backup.h"
#include "store/migrate.h"
#include "store/sealed.h"

#define RETRY_CAP_S 60u
#define MAX_FILES   100000u

struct backup_sched {
    char dir[4096];
    char scratch[4096];
    char cluster_id[65];
    uint64_t replica_id;
    unsigned interval_s, keep_count, keep_age_hours;
    uint8_t key[STORE_SEALED_KEY_SIZE];
    struct store_client cl;
    bool (*held)(void *arg);
    void *held_arg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;                    /* under mu */
    bool joined;                  /* under mu: backup_sched_stop ran */
    struct backup_sched_stats st; /* under mu */
};

/* ------------------------------------------------------------------------------------------------
 * Names and the pruning plan */

void backup_sched_name(int64_t wall_ms, uint64_t replica_id, char out[BACKUP_SCHED_NAME_MAX])
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, BACKUP_SCHED_NAME_MAX,
             BACKUP_SCHED_PREFIX "%04d%02d%02dT%02d%02d%02d.%03dZ-r%" PRIu64 BACKUP_SCHED_SUFFIX,
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(wall_ms % 1000), replica_id);
}

static bool digits(const char *p, unsigned n, int *out)
{
    int v = 0;
    for (unsigned i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

static bool all_digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
    }
    return n > 0;
}

bool backup_sched_parse_name(const char *name, int64_t *wall_ms)
{
    const size_t pl = strlen(BACKUP_SCHED_PREFIX), sl = strlen(BACKUP_SCHED_SUFFIX);
    size_t n = strlen(name);
    /* prefix, "YYYYMMDDTHHMMSS.mmmZ" (20), "-r", 1..20 digits, suffix */
    if (n < pl + 20 + 2 + 1 + sl || n > pl + 20 + 2 + 20 + sl ||
        strncmp(name, BACKUP_SCHED_PREFIX, pl) != 0 || strcmp(name + n - sl, BACKUP_SCHED_SUFFIX) != 0) {
        return false;
    }
    const char *p = name + pl;
    int y, mo, d, h, mi, s, ms;
    if (!digits(p, 4, &y) || !digits(p + 4, 2, &mo) || !digits(p + 6, 2, &d) || p[8] != 'T' ||
        !digits(p + 9, 2, &h) || !digits(p + 11, 2, &mi) || !digits(p + 13, 2, &s) || p[15] != '.' ||
        !digits(p + 16, 3, &ms) || p[19] != 'Z' || p[20] != '-' || p[21] != 'r' ||
        !all_digits(p + 22, n - sl - pl - 22)) {
        return false;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) {
        return false;
    }
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    *wall_ms = (int64_t)timegm(&tm) * 1000 + ms;
    return true;
}

unsigned backup_sched_prune_plan(const int64_t *times, size_t n, int64_t now_ms, unsigned keep_count,
                                 int64_t keep_age_ms, bool *del)
{
    unsigned marked = 0;
    for (size_t i = 0; i < n; i++) {
        /* Its rank: how many are newer (ties broken by position, so exactly one ranks 0). */
        size_t newer = 0;
        for (size_t j = 0; j < n; j++) {
            newer += times[j] > times[i] || (times[j] == times[i] && j < i);
        }
        /* The age in unsigned arithmetic: no overflow whatever the times (they come from names). */
        bool old = keep_age_ms > 0 && times[i] < now_ms &&
                   (uint64_t)now_ms - (uint64_t)times[i] > (uint64_t)keep_age_ms;
        del[i] = newer > 0 && (newer >= keep_count || old);
        marked += del[i];
    }
    return marked;
}

/* ------------------------------------------------------------------------------------------------
 * The directory */

struct listing {
    char (*names)[BACKUP_SCHED_NAME_MAX];
    int64_t *times;
    size_t n;
};

static void listing_free(struct listing *l)
{
    mem_free(l->names);
    mem_free(l->times);
}

static int list_backups(const char *dir, struct listing *l, char *errmsg)
{
    *l = (struct listing){0};
    DIR *d = opendir(dir);
    if (d == NULL) {
        int rv = gerr_from_errno(errno);
        gerr_set(errmsg, "backup_dir %s: %s", dir, strerror(errno));
        return rv;
    }
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && l->n < MAX_FILES) {
        int64_t t;
        if (strlen(e->d_name) >= BACKUP_SCHED_NAME_MAX || !backup_sched_parse_name(e->d_name, &t)) {
            continue;
        }
        if (l->n == cap) {
            cap = cap == 0 ? 32 : cap * 2;
            l->names = mem_realloc(l->names, sizeof *l->names * cap);
            l->times = mem_realloc(l->times, sizeof *l->times * cap);
        }
        memcpy(l->names[l->n], e->d_name, strlen(e->d_name) + 1); /* shorter than the slot: checked above */
        l->times[l->n++] = t;
    }
    closedir(d);
    return 0;
}

static void prune(struct backup_sched *s, int64_t now_ms)
{
    struct listing l;
    char err[GERR_MSG_SIZE];
    if (list_backups(s->dir, &l, err) != 0) {
        LOG_WARN("scheduled backups: cannot prune: %s", err);
        return;
    }
    bool *del = mem_zalloc(sizeof *del * (l.n + 1));
    backup_sched_prune_plan(l.times, l.n, now_ms, s->keep_count, (int64_t)s->keep_age_hours * 3600 * 1000,
                            del);
    uint64_t pruned = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (!del[i]) {
            continue;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", s->dir, l.names[i]);
        if (unlink(path) == 0) {
            pruned++;
            LOG_INFO("scheduled backups: deleted %s (retention)", l.names[i]);
        } else if (errno != ENOENT) {
            LOG_WARN("scheduled backups: cannot delete %s: %s", path, strerror(errno));
        }
    }
    mem_free(del);
    listing_free(&l);
    pthread_mutex_lock(&s->mu);
    s->st.pruned += pruned;
    pthread_mutex_unlock(&s->mu);
}

/* The time of the newest scheduled backup in the directory, 0 for none. */
static int64_t newest(struct backup_sched *s)
{
    struct listing l;
    char err[GERR_MSG_SIZE];
    int64_t t = 0;
    if (list_backups(s->dir, &l, err) == 0) {
        for (size_t i = 0; i < l.n; i++) {
            t = l.times[i] > t ? l.times[i] : t;
        }
        listing_free(&l);
    }
    return t;
}

/* ------------------------------------------------------------------------------------------------
 * Taking one */

struct out_file {
    int fd;
    uint64_t written;
};

static int write_fd(const uint8_t *p, size_t n, void *arg)
{
    struct out_file *o = arg;
    while (n > 0) {
        ssize_t w = write(o->fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return w < 0 ? gerr_from_errno(errno) : GERR_IO;
        }
        p += w;
        n -= (size_t)w;
        o->written += (uint64_t)w;
    }
    return 0;
}

static int take(struct backup_sched *s, int64_t wall_ms, char name[BACKUP_SCHED_NAME_MAX], uint64_t *size,
                int64_t *revision, char *errmsg)
{
    struct buf archive;
    buf_init(&archive);
    int64_t schema = 0;
    int rv = store_schema_version(&s->cl, &schema);
    if (rv != 0) {
        gerr_set(errmsg, "schema version: %s", s->cl.errmsg);
    } else {
        rv = store_backup_take(&s->cl, s->scratch, &archive, revision, errmsg);
    }
    if (rv != 0) {
        store_sealed_buf_wipe(&archive);
        return rv;
    }
    backup_sched_name(wall_ms, s->replica_id, name);
    char tmp[4200], final[4200];
    snprintf(tmp, sizeof tmp, "%s/.%s.partial", s->dir, name);
    snprintf(final, sizeof final, "%s/%s", s->dir, name);
    struct out_file o = {.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
    if (o.fd < 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "create %s: %s", tmp, strerror(errno));
        store_sealed_buf_wipe(&archive);
        return rv;
    }
    struct store_sealed_info info = {
        .revision = (uint64_t)*revision, .schema_version = (uint64_t)schema, .created_ms = (uint64_t)wall_ms};
    snprintf(info.cluster_id, sizeof info.cluster_id, "%s", s->cluster_id);
    struct store_sealer *sealer = NULL;
    rv = store_sealer_new(s->key, &info, write_fd, &o, &sealer, errmsg);
    if (rv == 0) {
        rv = store_sealer_update(sealer, archive.data, archive.len, errmsg);
    }
    if (rv == 0) {
        rv = store_sealer_finish(sealer, NULL, NULL, errmsg);
    }
    store_sealer_free(sealer);
    store_sealed_buf_wipe(&archive);
    if (rv == 0 && fsync(o.fd) != 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "fsync %s: %s", tmp, strerror(errno));
    }
    if (close(o.fd) != 0 && rv == 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "close %s: %s", tmp, strerror(errno));
    }
    if (rv == 0 && !s->held(s->held_arg)) {
        gerr_set(errmsg, "the reconciler lease moved to another replica while the backup ran: dropped");
        rv = GERR_STALE;
    }
    if (rv == 0 && rename(tmp, final) != 0) {
        rv = gerr_from_errno(errno);
        gerr_set(errmsg, "rename %s: %s", tmp, strerror(errno));
    }
    if (rv != 0) {
        unlink(tmp);
        return rv;
    }
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* the rename itself survives a crash */
        close(dfd);
    }
    *size = o.written;
    return 0;
}

static int64_t wall_now(void)
{
    struct clock *c = clock_system();
    return (int64_t)c->wall_ms(c);
}

static void *sched_main(void *arg)
{
    struct backup_sched *s = arg;
    uint64_t retry_at = 0; /* monotonic ms before which a failed backup is not tried again */
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        uint64_t mono = clock_mono_ms(clock_system());
        int64_t now = wall_now();
        if (mono >= retry_at && s->held(s->held_arg) && now - newest(s) >= (int64_t)s->interval_s * 1000) {
            char name[BACKUP_SCHED_NAME_MAX], err[GERR_MSG_SIZE] = "";
            uint64_t size = 0;
            int64_t revision = 0;
            int rv = take(s, now, name, &size, &revision, err);
            uint64_t took = clock_mono_ms(clock_system()) - mono;
            pthread_mutex_lock(&s->mu);
            if (rv == 0) {
                s->st.successes++;
                s->st.last_success_ms = now;
                s->st.last_duration_ms = took;
                s->st.last_size_bytes = size;
            } else {
                s->st.failures++;
            }
            pthread_mutex_unlock(&s->mu);
            if (rv == 0) {
                LOG_INFO("scheduled backups: wrote %s/%s (%" PRIu64 " bytes sealed, revision %" PRId64
                         ") in %" PRIu64 " ms",
                         s->dir, name, size, revision, took);
                prune(s, now);
            } else {
                unsigned wait_s = s->interval_s < RETRY_CAP_S ? s->interval_s : RETRY_CAP_S;
                LOG_WARN("scheduled backups: backup failed (%s): %s; trying again in %u s", gerr_name(rv),
                         err, wait_s);
                retry_at = clock_mono_ms(clock_system()) + wait_s * 1000ull;
            }
        }
        pthread_mutex_lock(&s->mu);
        struct timespec until;
        clock_mono_deadline(&until, 1000);
        while (!s->stop && clock_cond_wait_mono(&s->cond, &s->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------
 * Lifecycle */

int backup_sched_start(const struct backup_sched_config *cfg, struct backup_sched **out, char *errmsg)
{
    struct stat st;
    if (stat(cfg->dir, &st) != 0) {
        int rv = gerr_from_errno(errno);
        gerr_set(errmsg, "backup_dir %s: %s (create it, writable by gantryd)", cfg->dir, strerror(errno));
        return rv;
    }
    if (!S_ISDIR(st.st_mode)) {
        gerr_set(errmsg, "backup_dir %s is not a directory", cfg->dir);
        return GERR_INVAL;
    }
    if (access(cfg->dir, W_OK | X_OK) != 0) {
        int rv = gerr_from_errno(errno);
        gerr_set(errmsg, "backup_dir %s is not writable by gantryd: %s", cfg->dir, strerror(errno));
        return rv;
    }
    if (strlen(cfg->dir) >= 4000 || strlen(cfg->scratch_dir) >= 4000) {
        gerr_set(errmsg, "backup_dir: path too long");
        return GERR_INVAL;
    }
    struct backup_sched *s = mem_zalloc(sizeof *s);
    int rv = store_sealed_key_load(cfg->key_file, s->key, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "backup_seal_key_file");
        goto err;
    }
    rv = store_client_init(&s->cl, cfg->store);
    if (rv != 0) {
        gerr_set(errmsg, "scheduled backups: %s", s->cl.errmsg);
        goto err;
    }
    snprintf(s->dir, sizeof s->dir, "%s", cfg->dir);
    snprintf(s->scratch, sizeof s->scratch, "%s", cfg->scratch_dir);
    snprintf(s->cluster_id, sizeof s->cluster_id, "%s", cfg->cluster_id);
    s->replica_id = cfg->replica_id;
    s->interval_s = cfg->interval_s != 0 ? cfg->interval_s : 1;
    s->keep_count = cfg->keep_count != 0 ? cfg->keep_count : 1;
    s->keep_age_hours = cfg->keep_age_hours;
    s->held = cfg->held;
    s->held_arg = cfg->held_arg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        gerr_set(errmsg, "scheduled backups: cannot start the thread");
        rv = GERR_NOMEM;
        goto err_after_client;
    }
    LOG_INFO(
        "scheduled backups: every %u s into %s while this replica holds the reconciler lease; keeping %u%s",
        s->interval_s, s->dir, s->keep_count,
        s->keep_age_hours > 0 ? " at most, younger than the age limit" : "");
    *out = s;
    return 0;

err_after_client:
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    store_client_close(&s->cl);
err:
    OPENSSL_cleanse(s->key, sizeof s->key);
    mem_free(s);
    return rv;
}

void backup_sched_stop(struct backup_sched *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    bool joined = s->joined;
    s->stop = true;
    s->joined = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    if (!joined) {
        pthread_join(s->thread, NULL);
    }
}

void backup_sched_free(struct backup_sched *s)
{
    if (s == NULL) {
        return;
    }
    backup_sched_stop(s);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    store_client_close(&s->cl);
    OPENSSL_cleanse(s->key, sizeof s->key);
    mem_free(s);
}

void backup_sched_stats(struct backup_sched *s, struct backup_sched_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void backup_sched_metrics(struct backup_sched *s, struct buf *out)
{
    struct backup_sched_stats st;
    backup_sched_stats(s, &st);
    buf_printf(
        out,
        "# HELP gantry_backup_scheduled_total Scheduled backups this replica attempted (as lease holder), by "
        "outcome.\n"
        "# TYPE gantry_backup_scheduled_total counter\n"
        "gantry_backup_scheduled_total{outcome=\"success\"} %" PRIu64 "\n"
        "gantry_backup_scheduled_total{outcome=\"failure\"} %" PRIu64 "\n"
        "# HELP gantry_backup_last_success_timestamp_seconds When this replica last wrote a scheduled "
        "backup (Unix time; 0: never).\n"
        "# TYPE gantry_backup_last_success_timestamp_seconds gauge\n"
        "gantry_backup_last_success_timestamp_seconds %.3f\n"
        "# HELP gantry_backup_last_duration_seconds How long this replica's last scheduled backup took.\n"
        "# TYPE gantry_backup_last_duration_seconds gauge\ngantry_backup_last_duration_seconds %.3f\n"
        "# HELP gantry_backup_last_size_bytes Size of this replica's last scheduled backup (sealed file).\n"
        "# TYPE gantry_backup_last_size_bytes gauge\ngantry_backup_last_size_bytes %" PRIu64 "\n"
        "# HELP gantry_backup_pruned_total Scheduled backups this replica deleted by retention.\n"
        "# TYPE gantry_backup_pruned_total counter\ngantry_backup_pruned_total %" PRIu64 "\n",
        st.successes, st.failures, (double)st.last_success_ms / 1000.0, (double)st.last_duration_ms / 1000.0,
        st.last_size_bytes, st.pruned);
}
