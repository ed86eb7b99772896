/* Arbitrary bytes as a directory entry name in backup_dir (server/backup_sched.h): the scheduled
 * backups' retention decides what to delete from these names, so parsing must never crash or read
 * out of bounds, must accept only names it writes itself, and the plan built from the parsed times
 * must always keep the newest. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/backup_sched.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[300];
    size_t n = size < sizeof name - 1 ? size : sizeof name - 1;
    memcpy(name, data, n);
    name[n] = '\0';
    int64_t t = 0;
    if (backup_sched_parse_name(name, &t)) {
        /* Only a name of the written shape parses, and writing that time parses back to it. */
        if (strncmp(name, BACKUP_SCHED_PREFIX, strlen(BACKUP_SCHED_PREFIX)) != 0 || t < 0) {
            abort();
        }
        char again[BACKUP_SCHED_NAME_MAX];
        int64_t back = -1;
        backup_sched_name(t, 7, again);
        if (!backup_sched_parse_name(again, &back) || back != t) {
            abort();
        }
    }
    /* The bytes as backup times: whatever they are, the newest stays. */
    size_t k = size / sizeof(int64_t);
    if (k > 0 && k <= 64) {
        int64_t times[64];
        bool del[64];
        memcpy(times, data, k * sizeof(int64_t));
        unsigned keep = 1 + (unsigned)(data[0] % 5);
        unsigned marked =
            backup_sched_prune_plan(times, k, times[0], keep, (int64_t)(data[size - 1] % 3) * 1000, del);
        size_t newest = 0, kept = 0;
        for (size_t i = 0; i < k; i++) {
            newest = times[i] > times[newest] ? i : newest;
            kept += !del[i];
        }
        if (del[newest] && k > 0) {
            bool other_max_kept = false;
            for (size_t i = 0; i < k; i++) {
                other_max_kept = other_max_kept || (!del[i] && times[i] == times[newest]);
            }
            if (!other_max_kept) {
                abort();
            }
        }
        if (kept + marked != k || kept == 0) {
            abort();
        }
    }
    return 0;
}
