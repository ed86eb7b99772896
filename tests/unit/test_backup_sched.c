/* Scheduled backups: the file names and the retention plan (server/backup_sched.h). The thread
 * itself runs against real clusters in gantryd_backup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/backup_sched.h"

static void names_round_trip(void **state)
{
    (void)state;
    char name[BACKUP_SCHED_NAME_MAX];
    int64_t t = 1796565662123; /* 2026-12-06T14:01:02.123Z */
    backup_sched_name(t, 2, name);
    assert_string_equal(name, "gantry-backup-20261206T140102.123Z-r2.gbk");
    int64_t back = 0;
    assert_true(backup_sched_parse_name(name, &back));
    assert_int_equal(back, t);
    backup_sched_name(0, 18446744073709551615ull, name);
    assert_true(backup_sched_parse_name(name, &back));
    assert_int_equal(back, 0);
}

/* Anything else in the directory is never taken for a backup, so never pruned. */
static void other_names_are_not_backups(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "gantry-backup-.gbk",
        "gantry-backup-20261206T140102.123Z-r2.gbk.partial",
        ".gantry-backup-20261206T140102.123Z-r2.gbk.partial",
        "gantry-backup-20261206T140102.123Z-r2.gbk~",
        "gantry-backup-20261206T140102.123Z-r.gbk",
        "gantry-backup-20261206T140102.123Z-rx.gbk",
        "gantry-backup-20261206T140102.123-r2.gbk",
        "gantry-backup-20261306T140102.123Z-r2.gbk",
        "gantry-backup-20261206T250102.123Z-r2.gbk",
        "gantry-backup-2026120xT140102.123Z-r2.gbk",
        "gantry-backup-19691231T235959.999Z-r2.gbk",
        "gantry-backup-00000101T000000.000Z-r2.gbk",
        "gantry-backup-20261206T140102.123Z-r123456789012345678901.gbk",
        "my-gantry-backup-20261206T140102.123Z-r2.gbk",
        "notes.txt",
    };
    int64_t t;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (backup_sched_parse_name(bad[i], &t)) {
            fail_msg("\"%s\" was taken for a backup name", bad[i]);
        }
    }
}

#define H (3600ll * 1000)

static void prune_by_count_and_age(void **state)
{
    (void)state;
    int64_t now = 1000 * H;
    /* Unsorted on purpose: ranks come from the times. */
    int64_t t[] = {now - 3 * H, now - 1 * H, now - 50 * H, now - 2 * H, now - 4 * H};
    bool del[5];
    /* Count 3: the two oldest go. */
    assert_int_equal(backup_sched_prune_plan(t, 5, now, 3, 0, del), 2);
    assert_false(del[0]);
    assert_false(del[1]);
    assert_true(del[2]);
    assert_false(del[3]);
    assert_true(del[4]);
    /* Age 3 h with a large count: older than 3 h go (exactly 3 h stays). */
    assert_int_equal(backup_sched_prune_plan(t, 5, now, 100, 3 * H, del), 2);
    assert_true(del[2]);
    assert_true(del[4]);
    assert_false(del[0]);
    /* Both: the union. */
    assert_int_equal(backup_sched_prune_plan(t, 5, now, 2, 48 * H, del), 3);
    assert_true(del[0] && del[2] && del[4]);
    assert_false(del[1] || del[3]);
}

static void the_newest_is_never_deleted(void **state)
{
    (void)state;
    int64_t now = 1000 * H;
    int64_t t[] = {now - 100 * H, now - 200 * H};
    bool del[2];
    assert_int_equal(backup_sched_prune_plan(t, 2, now, 1, 1 * H, del), 1);
    assert_false(del[0]);
    assert_true(del[1]);
    /* Two with the same time and a count of 1: exactly one stays. */
    int64_t same[] = {now, now};
    assert_int_equal(backup_sched_prune_plan(same, 2, now, 1, 0, del), 1);
    assert_true(del[0] != del[1]);
    assert_int_equal(backup_sched_prune_plan(NULL, 0, now, 1, 0, del), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_round_trip),
        cmocka_unit_test(other_names_are_not_backups),
        cmocka_unit_test(prune_by_count_and_age),
        cmocka_unit_test(the_newest_is_never_deleted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
