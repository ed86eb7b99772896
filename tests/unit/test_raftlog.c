/* raft/raftlog.h on hand-made segments: what counts as an entry, where a segment ends, the
 * checksum, and the lag between two tails. The same functions on real nodes' logs:
 * tests/integration/test_store_raftlog.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "raft/raftlog.h"

struct seg {
    uint8_t b[4096];
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

static void seg_init(struct seg *s, uint64_t format)
{
    memset(s, 0, sizeof *s);
    put64(s->b, format);
    s->len = 8;
}

/* Append a batch of @n entries of term @term, entry i holding @sizes[i] bytes of value 'a' + i. */
static void seg_batch(struct seg *s, uint64_t term, unsigned n, const uint32_t *sizes)
{
    uint8_t *crcs = s->b + s->len, *header = crcs + 8;
    put64(header, n);
    size_t data_len = 0;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *h = header + 8 + 16 * i;
        put64(h, term);
        h[8] = 1; /* RAFT_COMMAND */
        put32(h + 12, sizes[i]);
        data_len += sizes[i];
    }
    size_t header_len = 8 + 16 * (size_t)n;
    uint8_t *data = header + header_len, *d = data;
    for (unsigned i = 0; i < n; i++) {
        memset(d, 'a' + (int)i, sizes[i]);
        d += sizes[i];
    }
    put32(crcs, raftlog_crc32(header, header_len, 0));
    put32(crcs + 4, raftlog_crc32(data, data_len, 0));
    s->len += 8 + header_len + data_len;
}

static void crc_is_libraft_s(void **state)
{
    (void)state;
    /* CRC-32 with polynomial 0x04c11db7, no reflection, init 0, no final xor. */
    assert_int_equal(raftlog_crc32("123456789", 9, 0), 0x89a1897fu);
    assert_int_equal(raftlog_crc32("", 0, 7), 7);
    uint32_t part = raftlog_crc32("1234", 4, 0);
    assert_int_equal(raftlog_crc32("56789", 5, part), 0x89a1897fu);
    /* Eight bytes at a time agrees with one at a time, at every length and alignment. */
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)(i * 131u + 7u);
    }
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len + off <= sizeof buf; len += 13) {
            uint32_t one = 0x12345678u;
            for (size_t i = 0; i < len; i++) {
                one = raftlog_crc32(buf + off + i, 1, one);
            }
            assert_int_equal(raftlog_crc32(buf + off, len, 0x12345678u), one);
        }
    }
}

static void scan_reads_complete_batches_only(void **state)
{
    (void)state;
    struct seg s = {0};
    struct raftlog_entry_id ids[16];
    size_t n = 99;
    /* Short, preallocated (format 0) and unknown formats. */
    assert_int_equal(raftlog_scan(s.b, 0, ids, 16, &n), 0);
    assert_int_equal(n, 0);
    seg_init(&s, 0);
    s.len = sizeof s.b;
    assert_int_equal(raftlog_scan(s.b, s.len, ids, 16, &n), 0);
    assert_int_equal(n, 0);
    seg_init(&s, 2);
    assert_int_equal(raftlog_scan(s.b, s.len, ids, 16, &n), GERR_PROTO);
    /* Two batches, then the zeros of a preallocated file. */
    seg_init(&s, 1);
    uint32_t a[3] = {8, 16, 0}, b[1] = {24};
    seg_batch(&s, 3, 3, a);
    size_t first_end = s.len;
    seg_batch(&s, 4, 1, b);
    size_t second_end = s.len;
    assert_int_equal(raftlog_scan(s.b, sizeof s.b, ids, 16, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0].term, 3);
    assert_int_equal(ids[1].size, 16);
    assert_int_equal(ids[2].size, 0);
    assert_int_equal(ids[2].crc, 0);
    assert_int_equal(ids[3].term, 4);
    uint8_t d[24];
    memset(d, 'a', sizeof d);
    assert_int_equal(ids[3].crc, raftlog_crc32(d, 24, 0));
    /* Room for fewer ids: the last ones, and the count is still all of them. */
    assert_int_equal(raftlog_scan(s.b, sizeof s.b, ids, 2, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0].term, 3);
    assert_int_equal(ids[0].size, 0);
    assert_int_equal(ids[1].term, 4);
    assert_int_equal(ids[1].crc, raftlog_crc32(d, 24, 0));
    /* Data is checked from the end back only as far as the ids wanted: a corrupt first batch is
     * not seen for the last id, and ends the segment before it when every id is wanted. */
    s.b[first_end - 1] ^= 0x01;
    assert_int_equal(raftlog_scan(s.b, sizeof s.b, ids, 1, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0].term, 4);
    assert_int_equal(raftlog_scan(s.b, sizeof s.b, ids, 16, &n), 0);
    assert_int_equal(n, 0);
    s.b[first_end - 1] ^= 0x01;
    /* The second batch cut short (still being written) ends the segment after the first. */
    for (size_t cut = first_end; cut < second_end; cut += 4) {
        assert_int_equal(raftlog_scan(s.b, cut, ids, 16, &n), 0);
        assert_int_equal(n, 3);
    }
    /* A flipped bit in the second batch's header or data ends it too. */
    s.b[first_end + 8 + 8] ^= 1; /* its first entry's term */
    assert_int_equal(raftlog_scan(s.b, sizeof s.b, ids, 16, &n), 0);
    assert_int_equal(n, 3);
    s.b[first_end + 8 + 8] ^= 1;
    s.b[second_end - 1] ^= 0x80; /* its data */
    assert_int_equal(raftlog_scan(s.b, sizeof s.b, ids, 16, &n), 0);
    assert_int_equal(n, 3);
    s.b[second_end - 1] ^= 0x80;
    /* A batch claiming more entries than the file can hold. */
    put64(s.b + first_end + 8, UINT64_MAX / 2);
    assert_int_equal(raftlog_scan(s.b, sizeof s.b, ids, 16, &n), 0);
    assert_int_equal(n, 3);
}

static struct raftlog_entry_id id(uint64_t term, uint32_t crc)
{
    return (struct raftlog_entry_id){.term = term, .size = 8, .crc = crc};
}

static void lag_finds_the_targets_tail(void **state)
{
    (void)state;
    struct raftlog_entry_id leader[10];
    for (unsigned i = 0; i < 10; i++) {
        leader[i] = id(1, 100 + i);
    }
    assert_int_equal(raftlog_lag(leader, 10, leader + 2, 8), 0);
    assert_int_equal(raftlog_lag(leader, 10, leader + 1, 8), 1);
    assert_int_equal(raftlog_lag(leader, 10, leader, 3), 7);
    struct raftlog_entry_id other[2] = {id(2, 5), id(2, 6)};
    assert_int_equal(raftlog_lag(leader, 10, other, 2), RAFTLOG_LAG_UNKNOWN);
    /* Entries the leader no longer keeps: unknown, not "caught up". */
    assert_int_equal(raftlog_lag(leader + 5, 5, leader, 3), RAFTLOG_LAG_UNKNOWN);
    assert_int_equal(raftlog_lag(leader, 0, leader, 0), 0);
    assert_int_equal(raftlog_lag(leader, 10, leader, 0), RAFTLOG_LAG_UNKNOWN);
    /* A run of identical entries: the target's tail matches at the leader's end only when it
     * has all of them. */
    struct raftlog_entry_id same[6];
    for (unsigned i = 0; i < 6; i++) {
        same[i] = id(1, 42);
    }
    assert_int_equal(raftlog_lag(same, 6, same, 6), 0);
    assert_int_equal(raftlog_lag(same, 6, same, 5), 0); /* indistinguishable: why probes send 8 */
}

static void tail_of_a_missing_dir(void **state)
{
    (void)state;
    struct raftlog_entry_id ids[4];
    unsigned n = 7;
    char err[GERR_MSG_SIZE];
    assert_int_equal(raftlog_tail("/nonexistent/raftlog", ids, 4, &n, err), GERR_NOTFOUND);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "/nonexistent/raftlog"));
}

/* ---- The reader against raftlog_tail on the same directory, as segments change under it */

static void put_file(const char *dir, const char *name, const uint8_t *b, size_t len, size_t prealloc)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    if (prealloc > len) {
        assert_int_equal(ftruncate(fd, (off_t)prealloc), 0); /* libraft's zeros ahead */
    }
    assert_int_equal(pwrite(fd, b, len, 0), (ssize_t)len);
    close(fd);
}

/* Both ways of reading give the same ids, for a few windows. */
static void same_tail(struct raftlog_reader *r, const char *dir, unsigned expect_total)
{
    const unsigned windows[] = {1, 2, 5, 100};
    for (size_t w = 0; w < sizeof windows / sizeof *windows; w++) {
        struct raftlog_entry_id a[100], b[100];
        unsigned na = 0, nb = 0;
        char err[GERR_MSG_SIZE];
        assert_int_equal(raftlog_tail(dir, a, windows[w], &na, err), 0);
        assert_int_equal(raftlog_reader_tail(r, b, windows[w], &nb, err), 0);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof *a * na);
        if (windows[w] == 100) {
            assert_int_equal(nb, expect_total);
        }
    }
}

static void reader_follows_the_log(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-raftlog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct raftlog_reader *r = raftlog_reader_new(dir);
    struct raftlog_entry_id ids[4];
    unsigned n = 0;
    char err[GERR_MSG_SIZE];
    assert_int_equal(raftlog_reader_tail(r, ids, 4, &n, err), GERR_NOTFOUND);

    const uint32_t one[] = {8}, two[] = {16, 24}, three[] = {8, 8, 32};
    struct seg closed;
    seg_init(&closed, 1);
    seg_batch(&closed, 1, 1, one);
    seg_batch(&closed, 1, 2, two);
    put_file(dir, "0000000000000001-0000000000000003", closed.b, closed.len, 0);
    /* A preallocated open segment: nothing in it yet. */
    struct seg open1;
    memset(&open1, 0, sizeof open1);
    put_file(dir, "open-1", open1.b, 8, sizeof open1.b);
    same_tail(r, dir, 3);
    /* Its first batch, then a second one whose header is written but not its data (torn). */
    seg_init(&open1, 1);
    seg_batch(&open1, 2, 1, one);
    put_file(dir, "open-1", open1.b, open1.len, 0);
    same_tail(r, dir, 4);
    size_t before = open1.len;
    seg_batch(&open1, 2, 3, three);
    put_file(dir, "open-1", open1.b, before + 8 + 8 + 16 * 3, 0); /* checksums and header only */
    same_tail(r, dir, 4);
    put_file(dir, "open-1", open1.b, open1.len, 0); /* the data arrives */
    same_tail(r, dir, 7);
    /* The same open segment rewritten from the start (another term): its last batch changed. */
    seg_init(&open1, 1);
    seg_batch(&open1, 3, 2, two);
    put_file(dir, "open-1", open1.b, open1.len, 0);
    same_tail(r, dir, 5);
    /* Closed by renaming, a new open one after it, the oldest segment removed. */
    char from[512], to[512];
    snprintf(from, sizeof from, "%s/open-1", dir);
    snprintf(to, sizeof to, "%s/0000000000000004-0000000000000005", dir);
    assert_int_equal(rename(from, to), 0);
    struct seg open2;
    seg_init(&open2, 1);
    seg_batch(&open2, 3, 1, one);
    put_file(dir, "open-2", open2.b, open2.len, sizeof open2.b);
    same_tail(r, dir, 6);
    snprintf(from, sizeof from, "%s/0000000000000001-0000000000000003", dir);
    assert_int_equal(unlink(from), 0);
    same_tail(r, dir, 3);
    /* A closed segment replaced under the same name with other content. */
    struct seg other;
    seg_init(&other, 1);
    seg_batch(&other, 4, 3, three);
    assert_int_equal(unlink(to), 0);
    put_file(dir, "0000000000000004-0000000000000005", other.b, other.len, 0);
    same_tail(r, dir, 4);
    /* An unknown format is refused as raftlog_tail refuses it. */
    seg_init(&open2, 7);
    put_file(dir, "open-2", open2.b, open2.len, 0);
    assert_int_equal(raftlog_reader_tail(r, ids, 4, &n, err), GERR_PROTO);
    assert_non_null(strstr(err, "unknown segment format"));

    raftlog_reader_free(r);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc_is_libraft_s),           cmocka_unit_test(scan_reads_complete_batches_only),
        cmocka_unit_test(lag_finds_the_targets_tail), cmocka_unit_test(tail_of_a_missing_dir),
        cmocka_unit_test(reader_follows_the_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
