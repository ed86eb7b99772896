/* The process driver's output log (drivers/process_log.h) without bubblewrap: the pump in a child
 * process fed through a pipe, rotation bounding the files, readers with tail and since across the
 * two files, a reader following through rotations (also at the pump's awkward moments), a partial
 * record left for later, a corrupt header refused, removal noticed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "drivers/process_log.h"
#include "lib/mem.h"

static char dir[256];

struct pump {
    pid_t pid;
    int wr;
};

static void pump_start(struct pump *p, const char *path, uint64_t max)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        close(fds[1]);
        plog_pump(fds[0], path, max);
        _exit(0);
    }
    close(fds[0]);
    p->wr = fds[1];
}

static void pump_write(struct pump *p, const char *s)
{
    assert_int_equal(write(p->wr, s, strlen(s)), (ssize_t)strlen(s));
    usleep(2000); /* one record per write, as a line-buffered program makes */
}

static void pump_end(struct pump *p)
{
    int st;
    close(p->wr);
    assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
}

struct buf_out {
    char *s;
    size_t n;
};

/* Everything the reader returns until it answers anything but 0. */
static char errmsg_last[GERR_MSG_SIZE];

static int read_all(struct plog_reader *r, struct buf_out *out)
{
    static uint8_t chunk[PLOG_CHUNK_MAX];
    char *errmsg = errmsg_last;
    size_t n;
    uint64_t ts;
    int rv;
    while ((rv = plog_next(r, chunk, &n, &ts, errmsg)) == 0) {
        out->s = mem_realloc(out->s, out->n + n + 1);
        memcpy(out->s + out->n, chunk, n);
        out->n += n;
        out->s[out->n] = '\0';
    }
    return rv;
}

static void test_tail_since_and_end(void **state)
{
    (void)state;
    char path[300], errmsg[GERR_MSG_SIZE];
    snprintf(path, sizeof path, "%s/a.log", dir);
    struct pump p;
    pump_start(&p, path, 0);
    pump_write(&p, "one\n");
    pump_write(&p, "two\nthree\n");
    usleep(20000);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t mid = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000 + 1;
    usleep(20000);
    pump_write(&p, "four\nfive");
    pump_end(&p);

    struct plog_query all = {.tail_lines = -1}, tail2 = {.tail_lines = 2}, none = {.tail_lines = 0},
                      since = {.tail_lines = -1, .since_ms = mid}, big = {.tail_lines = 100};
    struct plog_reader *r;
    struct buf_out o = {0};
    assert_int_equal(plog_open(path, &all, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_CLOSED); /* the END record */
    assert_string_equal(o.s, "one\ntwo\nthree\nfour\nfive");
    plog_close(r);
    mem_free(o.s);
    o = (struct buf_out){0};
    assert_int_equal(plog_open(path, &tail2, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_CLOSED);
    assert_string_equal(o.s, "four\nfive"); /* the open last line counts */
    plog_close(r);
    mem_free(o.s);
    o = (struct buf_out){0};
    assert_int_equal(plog_open(path, &none, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_CLOSED);
    assert_null(o.s);
    plog_close(r);
    assert_int_equal(plog_open(path, &since, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_CLOSED);
    assert_string_equal(o.s, "four\nfive");
    plog_close(r);
    mem_free(o.s);
    o = (struct buf_out){0};
    assert_int_equal(plog_open(path, &big, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_CLOSED);
    assert_string_equal(o.s, "one\ntwo\nthree\nfour\nfive");
    plog_close(r);
    mem_free(o.s);

    char tail[8];
    plog_tail_text(path, 0, tail, sizeof tail);
    assert_string_equal(tail, "ur five"); /* the last 7 bytes, the newline as a space */
    plog_remove(path);
    assert_int_equal(plog_open(path, &all, &r, errmsg), GERR_NOTFOUND);
}

/* Rotation keeps at most two files of about max bytes; a follower reads across rotations without
 * losing or repeating a line, as long as it keeps up; the removal of the log ends it. */
static void test_rotation_and_follow(void **state)
{
    (void)state;
    char path[300], old[310], errmsg[GERR_MSG_SIZE], line[64];
    snprintf(path, sizeof path, "%s/b.log", dir);
    snprintf(old, sizeof old, "%s.1", path);
    struct pump p;
    pump_start(&p, path, PLOG_FILE_MIN);
    struct plog_query all = {.tail_lines = -1};
    struct plog_reader *r = NULL;
    for (int i = 0; i < 50 && plog_open(path, &all, &r, errmsg) != 0; i++) {
        usleep(10000);
    }
    assert_non_null(r);
    struct buf_out o = {0};
    const int lines = 30000; /* 300 KB: several rotations of 64 KiB, however the pump's reads coalesce */
    for (int i = 0; i < lines; i++) {
        snprintf(line, sizeof line, "l%08d\n", i);
        assert_int_equal(write(p.wr, line, strlen(line)), (ssize_t)strlen(line));
        if (i % 200 == 199) {
            /* Keep up (a follower more than a whole file behind skips what was rotated away). */
            for (int k = 0; k < 1000 && o.n < (size_t)(i + 1) * 10; k++) {
                assert_int_equal(read_all(r, &o), GERR_BUSY);
                if (o.n < (size_t)(i + 1) * 10) {
                    usleep(1000);
                }
            }
        }
    }
    pump_end(&p);
    assert_int_equal(read_all(r, &o), GERR_CLOSED);
    plog_close(r);
    /* The follower saw every line once, in order. */
    if (o.n != (size_t)lines * 10) {
        mem_free(o.s);
        fail_msg("the follower got %zu bytes of %d", o.n, lines * 10);
    }
    size_t expect_len = (size_t)lines * 10;
    assert_int_equal(o.n, expect_len);
    for (int i = 0; i < lines; i++) {
        snprintf(line, sizeof line, "l%08d\n", i);
        assert_memory_equal(o.s + (size_t)i * 10, line, 10);
    }
    mem_free(o.s);
    struct stat a, b;
    assert_int_equal(stat(path, &a), 0);
    assert_int_equal(stat(old, &b), 0);
    assert_true((uint64_t)a.st_size <= PLOG_FILE_MIN + PLOG_HEADER);
    assert_true((uint64_t)b.st_size <= PLOG_FILE_MIN);
    /* A new reader sees only what the two files keep: the newest lines, ending with the last. */
    o = (struct buf_out){0};
    assert_int_equal(plog_open(path, &all, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_CLOSED);
    plog_close(r);
    assert_true(o.n < expect_len && o.n > 0);
    snprintf(line, sizeof line, "l%08d\n", lines - 1);
    assert_memory_equal(o.s + o.n - 10, line, 10);
    mem_free(o.s);
    /* Removal (the sandbox deleted) ends a follower with GERR_NOTFOUND. The files of the run above
     * go first: the forked pump truncates them only once it runs, and a reader opened before that
     * read the old END record (a CI failure under load). */
    plog_remove(path);
    pump_start(&p, path, 0);
    pump_write(&p, "x\n");
    r = NULL;
    for (int i = 0; i < 50 && plog_open(path, &all, &r, errmsg) != 0; i++) {
        usleep(10000);
    }
    assert_non_null(r);
    o = (struct buf_out){0};
    assert_int_equal(read_all(r, &o), GERR_BUSY);
    plog_remove(path);
    assert_int_equal(read_all(r, &o), GERR_NOTFOUND);
    plog_close(r);
    mem_free(o.s);
    pump_end(&p);
    plog_remove(path);
}

/* Append one record of @text to @path, as the pump writes it. */
static void put_record(const char *path, const char *text)
{
    uint8_t rec[PLOG_HEADER + 64] = {0};
    size_t n = strlen(text);
    assert_true(n <= 64);
    rec[0] = 0x10; /* some time */
    rec[8] = (uint8_t)n;
    memcpy(rec + PLOG_HEADER, text, n);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, rec, PLOG_HEADER + n), (ssize_t)(PLOG_HEADER + n));
    close(fd);
}

/* The pump's steps done by hand, at the moments that matter. A follower whose file a second
 * rotation replaced reads on from the file that replaced it, also inside the pump's window between
 * its rename and its new file (that window once ended a follow with "was deleted"). A removal ends
 * a follower without sending the older file again. */
static void test_rotation_windows(void **state)
{
    (void)state;
    char path[300], old[310], errmsg[GERR_MSG_SIZE];
    snprintf(path, sizeof path, "%s/d.log", dir);
    snprintf(old, sizeof old, "%s.1", path);
    struct plog_query all = {.tail_lines = -1};
    struct plog_reader *r = NULL;
    struct buf_out o = {0};
    put_record(path, "a\n");
    assert_int_equal(plog_open(path, &all, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_BUSY);
    assert_string_equal(o.s, "a\n");
    /* Two rotations before the follower looks again; the second stops before its new file. */
    assert_int_equal(rename(path, old), 0);
    put_record(path, "b\n");
    assert_int_equal(rename(path, old), 0);
    assert_int_equal(read_all(r, &o), GERR_BUSY);
    assert_string_equal(o.s, "a\nb\n");
    put_record(path, "c\n");
    assert_int_equal(read_all(r, &o), GERR_BUSY);
    assert_string_equal(o.s, "a\nb\nc\n");
    /* Removed while the follower holds the current file: the end, nothing read twice. */
    plog_remove(path);
    assert_int_equal(read_all(r, &o), GERR_NOTFOUND);
    assert_string_equal(o.s, "a\nb\nc\n");
    assert_non_null(strstr(errmsg_last, "was deleted"));
    plog_close(r);
    mem_free(o.s);
    /* Half removed (plog_remove's first step) while the follower is still in <path>.1: on to the
     * newer file, then the end once it is gone too. */
    put_record(path, "d\n");
    assert_int_equal(rename(path, old), 0);
    put_record(path, "e\n");
    o = (struct buf_out){0};
    assert_int_equal(plog_open(path, &all, &r, errmsg), 0);
    uint8_t chunk[PLOG_CHUNK_MAX];
    size_t n;
    uint64_t ts;
    assert_int_equal(plog_next(r, chunk, &n, &ts, errmsg), 0);
    assert_memory_equal(chunk, "d\n", 2);
    assert_int_equal(unlink(old), 0);
    assert_int_equal(read_all(r, &o), GERR_BUSY);
    assert_string_equal(o.s, "e\n");
    assert_int_equal(unlink(path), 0);
    assert_int_equal(read_all(r, &o), GERR_NOTFOUND);
    plog_close(r);
    mem_free(o.s);
}

/* A partial record at the end is left for later; a corrupt header is refused. */
static void test_partial_and_corrupt(void **state)
{
    (void)state;
    char path[300], errmsg[GERR_MSG_SIZE];
    snprintf(path, sizeof path, "%s/c.log", dir);
    uint8_t rec[PLOG_HEADER + 3] = {0};
    rec[0] = 0x10; /* some time */
    rec[1] = 0x27;
    rec[8] = 3; /* three bytes */
    memcpy(rec + PLOG_HEADER, "abc", 3);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, rec, PLOG_HEADER + 1), PLOG_HEADER + 1);
    struct plog_query all = {.tail_lines = -1};
    struct plog_reader *r;
    struct buf_out o = {0};
    assert_int_equal(plog_open(path, &all, &r, errmsg), 0);
    assert_int_equal(read_all(r, &o), GERR_BUSY);
    assert_null(o.s);
    assert_int_equal(write(fd, rec + PLOG_HEADER + 1, 2), 2);
    assert_int_equal(read_all(r, &o), GERR_BUSY);
    assert_string_equal(o.s, "abc");
    rec[8] = 0xff; /* over PLOG_CHUNK_MAX */
    rec[9] = 0xff;
    rec[10] = 0xff;
    assert_int_equal(write(fd, rec, PLOG_HEADER), PLOG_HEADER);
    assert_int_equal(read_all(r, &o), GERR_PROTO);
    assert_non_null(strstr(errmsg_last, "corrupt"));
    plog_close(r);
    mem_free(o.s);
    close(fd);
    uint64_t ts;
    uint32_t n, flags;
    assert_int_equal(plog_header_decode(rec, PLOG_HEADER - 1, &ts, &n, &flags), GERR_BUSY);
    rec[8] = 0;
    rec[9] = 0;
    rec[10] = 0;
    rec[12] = 2; /* an unknown flag */
    assert_int_equal(plog_header_decode(rec, PLOG_HEADER, &ts, &n, &flags), GERR_PROTO);
    plog_remove(path);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/gantry-plog-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tail_since_and_end),
        cmocka_unit_test(test_rotation_and_follow),
        cmocka_unit_test(test_rotation_windows),
        cmocka_unit_test(test_partial_and_corrupt),
    };
    int failed = cmocka_run_group_tests_name("driver_process_log", tests, NULL, NULL);
    rmdir(dir);
    return failed;
}
