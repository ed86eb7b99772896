/* raft/catchup.h, catchup_self (readiness: does this node's log hold the leader's last entries?)
 * on hand-made segments, with the probe answered from a second hand-made log. The segment format
 * is raft/raftlog.h's; tests/unit/test_raftlog.c covers the reader itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "raft/catchup.h"

struct seg {
    uint8_t b[8192];
    size_t len;
};

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* A format-1 segment holding one batch of entries @first..@last (term 1), entry k carrying 8 * k
 * bytes of value k: every entry is told apart by its size and checksum. */
static void seg_make(struct seg *s, unsigned first, unsigned last)
{
    memset(s, 0, sizeof *s);
    put64(s->b, 1);
    s->len = 8;
    unsigned n = last - first + 1;
    uint8_t *crcs = s->b + s->len, *header = crcs + 8;
    put64(header, n);
    size_t header_len = 8 + 16 * (size_t)n, data_len = 0;
    uint8_t *data = header + header_len;
    for (unsigned k = first; k <= last; k++) {
        uint8_t *h = header + 8 + 16 * (k - first);
        put64(h, 1);
        h[8] = 1; /* RAFT_COMMAND */
        put32(h + 12, 8 * k);
        memset(data + data_len, (int)k, 8 * k);
        data_len += 8 * k;
    }
    put32(crcs, raftlog_crc32(header, header_len, 0));
    put32(crcs + 4, raftlog_crc32(data, data_len, 0));
    s->len += 8 + header_len + data_len;
    assert_true(s->len <= sizeof s->b);
}

/* A directory holding one open segment with entries @first..@last (none when @last is 0). */
static void log_dir(char *dir, size_t len, unsigned first, unsigned last)
{
    char tmpl[] = "/tmp/gantry-catchup-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    snprintf(dir, len, "%s", tmpl);
    if (last == 0) {
        return;
    }
    struct seg s;
    seg_make(&s, first, last);
    char path[256];
    snprintf(path, sizeof path, "%s/open-1", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(s.b, 1, s.len, f), s.len);
    fclose(f);
}

static void rm_dir(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/open-1", dir);
    unlink(path);
    rmdir(dir);
}

struct fake_leader {
    const char *dir;   /* the leader's log, read by the probe */
    int fail;          /* the probe's error, 0: answer */
    uint64_t asked_id; /* the node the probe was sent to */
};

static int probe(void *arg, uint64_t node_id, struct raftlog_entry_id *tail, unsigned *n, char *errmsg)
{
    struct fake_leader *l = arg;
    l->asked_id = node_id;
    *n = 0;
    if (l->fail != 0) {
        gerr_set(errmsg, "connection refused");
        return l->fail;
    }
    return raftlog_tail(l->dir, tail, RAFTLOG_PROBE_TAIL, n, errmsg);
}

static int self_check(unsigned own_last, unsigned leader_last, int fail, char *err)
{
    char own[64], leader[64];
    log_dir(own, sizeof own, 1, own_last);
    log_dir(leader, sizeof leader, 1, leader_last);
    struct fake_leader l = {.dir = leader, .fail = fail};
    struct catchup c = {.dir = own, .probe = probe, .arg = &l};
    int rv = catchup_self(&c, 7, err);
    assert_int_equal(l.asked_id, 7);
    rm_dir(own);
    rm_dir(leader);
    return rv;
}

static void holding_the_leaders_tail_is_caught_up(void **state)
{
    (void)state;
    char err[GERR_MSG_SIZE] = "";
    assert_int_equal(self_check(20, 20, 0, err), 0);
    /* Entries written after the probe answered: still caught up. */
    assert_int_equal(self_check(23, 20, 0, err), 0);
}

static void missing_the_leaders_last_entries_is_not(void **state)
{
    (void)state;
    char err[GERR_MSG_SIZE] = "";
    assert_int_equal(self_check(19, 20, 0, err), GERR_UNAVAILABLE);
    assert_non_null(strstr(err, "does not hold the leader's last entries"));
    err[0] = '\0';
    assert_int_equal(self_check(5, 20, 0, err), GERR_UNAVAILABLE);
    assert_non_null(strstr(err, "catching up"));
}

/* After a snapshot install a follower's log holds only the entries since the snapshot, fewer than
 * the probe's tail: caught up when they are the leader's newest, not when one is missing. */
static void a_log_shorter_than_the_probe_after_a_snapshot(void **state)
{
    (void)state;
    char own[64], leader[64], err[GERR_MSG_SIZE] = "";
    log_dir(leader, sizeof leader, 1, 20);
    struct fake_leader l = {.dir = leader};
    log_dir(own, sizeof own, 16, 20); /* the snapshot covers 1..15 */
    struct catchup c = {.dir = own, .probe = probe, .arg = &l};
    assert_int_equal(catchup_self(&c, 7, err), 0);
    rm_dir(own);
    log_dir(own, sizeof own, 15, 19); /* one entry short of the leader */
    c.dir = own;
    assert_int_equal(catchup_self(&c, 7, err), GERR_UNAVAILABLE);
    assert_non_null(strstr(err, "does not hold the leader's last entries"));
    rm_dir(own);
    log_dir(own, sizeof own, 1, 0); /* only the snapshot: nothing to compare, not caught up */
    c.dir = own;
    assert_int_not_equal(catchup_self(&c, 7, err), 0);
    rm_dir(own);
    rm_dir(leader);
}

static void a_leader_that_does_not_answer_is_not_caught_up(void **state)
{
    (void)state;
    char err[GERR_MSG_SIZE] = "";
    assert_int_equal(self_check(20, 20, GERR_TIMEOUT, err), GERR_TIMEOUT);
    assert_non_null(strstr(err, "did not answer the catch-up probe: connection refused"));
    assert_non_null(strstr(err, "member 7"));
}

static void an_unreadable_own_log_is_not_caught_up(void **state)
{
    (void)state;
    char leader[64], err[GERR_MSG_SIZE] = "";
    log_dir(leader, sizeof leader, 1, 20);
    struct fake_leader l = {.dir = leader};
    struct catchup c = {.dir = "/nonexistent/gantry-catchup", .probe = probe, .arg = &l};
    assert_int_not_equal(catchup_self(&c, 7, err), 0);
    assert_non_null(strstr(err, "this replica's Raft log could not be read"));
    rm_dir(leader);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(holding_the_leaders_tail_is_caught_up),
        cmocka_unit_test(missing_the_leaders_last_entries_is_not),
        cmocka_unit_test(a_log_shorter_than_the_probe_after_a_snapshot),
        cmocka_unit_test(a_leader_that_does_not_answer_is_not_caught_up),
        cmocka_unit_test(an_unreadable_own_log_is_not_caught_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
