/* Unit tests for lib/: the error table and messages, buffers, the intrusive queue, the fake clock
 * and rand_range. Written from the headers. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <malloc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/jobs.h"
#include "lib/mem.h"
#include "lib/queue.h"
#include "lib/rand.h"
#include "lib/utf8.h"

/* ------------------------------------------------------------------------------------------------
 * err */

static void test_err_names_and_strings(void **state)
{
    (void)state;
    assert_string_equal(gerr_name(GERR_OK), "GERR_OK");
    assert_string_equal(gerr_name(GERR_TIMEOUT), "GERR_TIMEOUT");
    assert_string_equal(gerr_name(GERR_REFUSED), "GERR_REFUSED");
    assert_string_equal(gerr_name(GERR_INTERNAL), "GERR_INTERNAL");
    assert_string_equal(gerr_str(GERR_OK), "ok");
    assert_string_equal(gerr_str(GERR_PROTO), "protocol violation by peer");
    assert_string_equal(gerr_str(GERR_TOOBIG), "message or result too large");

    /* Every code in the table has a distinct name with the prefix and a non-empty text. */
    for (int a = 0; a < GERR__COUNT; a++) {
        const char *name = gerr_name(a);
        assert_non_null(name);
        assert_int_equal(strncmp(name, "GERR_", 5), 0);
        assert_non_null(gerr_str(a));
        assert_true(strlen(gerr_str(a)) > 0);
        assert_string_not_equal(gerr_str(a), "unknown error");
        for (int b = a + 1; b < GERR__COUNT; b++) {
            assert_string_not_equal(name, gerr_name(b));
        }
    }

    /* Outside the table: never NULL. */
    static const int outside[] = {-1, GERR__COUNT, 1000, -2147483647 - 1, 2147483647};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        assert_non_null(gerr_name(outside[i]));
        assert_string_equal(gerr_str(outside[i]), "unknown error");
    }
}

static void test_err_from_errno(void **state)
{
    (void)state;
    assert_int_equal(gerr_from_errno(EAGAIN), GERR_TIMEOUT);
    assert_int_equal(gerr_from_errno(ETIMEDOUT), GERR_TIMEOUT);
    assert_int_equal(gerr_from_errno(ENOMEM), GERR_NOMEM);
    assert_int_equal(gerr_from_errno(ECONNREFUSED), GERR_CLOSED);
    assert_int_equal(gerr_from_errno(ECONNRESET), GERR_CLOSED);
    assert_int_equal(gerr_from_errno(EPIPE), GERR_CLOSED);
    assert_int_equal(gerr_from_errno(ENOTCONN), GERR_CLOSED);
    assert_int_equal(gerr_from_errno(EINVAL), GERR_INVAL);
    assert_int_equal(gerr_from_errno(EIO), GERR_IO);
    assert_int_equal(gerr_from_errno(EBADF), GERR_IO);
    assert_int_equal(gerr_from_errno(ENOSPC), GERR_IO);
}

static void test_err_set(void **state)
{
    (void)state;
    char msg[GERR_MSG_SIZE];
    gerr_set(msg, "node %d: %s", 3, "down");
    assert_string_equal(msg, "node 3: down");

    /* Truncated silently, always terminated. */
    char big[2 * GERR_MSG_SIZE];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memset(msg, 'X', sizeof msg);
    gerr_set(msg, "%s", big);
    assert_int_equal(strlen(msg), GERR_MSG_SIZE - 1);
}

static void test_err_wrap(void **state)
{
    (void)state;
    char msg[GERR_MSG_SIZE];
    gerr_set(msg, "connection refused");
    gerr_wrap(msg, "connect %s", "127.0.0.1:9001");
    assert_string_equal(msg, "connect 127.0.0.1:9001: connection refused");
    gerr_wrap(msg, "find leader");
    assert_string_equal(msg, "find leader: connect 127.0.0.1:9001: connection refused");

    /* The old message may be passed as an argument too (it is read before being overwritten). */
    gerr_set(msg, "inner");
    gerr_wrap(msg, "[%s]", msg);
    assert_string_equal(msg, "[inner]: inner");
}

static void test_err_wrap_truncation(void **state)
{
    (void)state;
    char msg[GERR_MSG_SIZE];
    char fill[GERR_MSG_SIZE];

    /* A full-length inner message: the prefix goes first, the tail of the inner one is cut. */
    memset(fill, 'i', sizeof fill - 1);
    fill[sizeof fill - 1] = '\0';
    gerr_set(msg, "%s", fill);
    assert_int_equal(strlen(msg), GERR_MSG_SIZE - 1);
    gerr_wrap(msg, "ctx");
    assert_int_equal(strlen(msg), GERR_MSG_SIZE - 1);
    assert_memory_equal(msg, "ctx: iii", 8);

    /* A prefix longer than the buffer: terminated, nothing past the end. */
    char wide[GERR_MSG_SIZE + 100];
    memset(wide, 'p', sizeof wide - 1);
    wide[sizeof wide - 1] = '\0';
    gerr_set(msg, "inner");
    gerr_wrap(msg, "%s", wide);
    assert_int_equal(strlen(msg), GERR_MSG_SIZE - 1);
    assert_int_equal(msg[0], 'p');

    /* A prefix that leaves room for exactly part of ": inner". */
    char near[GERR_MSG_SIZE];
    memset(near, 'q', GERR_MSG_SIZE - 4);
    near[GERR_MSG_SIZE - 4] = '\0';
    gerr_set(msg, "inner");
    gerr_wrap(msg, "%s", near);
    assert_int_equal(strlen(msg), GERR_MSG_SIZE - 1);
    assert_memory_equal(msg + GERR_MSG_SIZE - 4, ": ", 2);
    assert_int_equal(msg[GERR_MSG_SIZE - 2], 'i');

    /* An unterminated buffer (a caller bug elsewhere) still yields a terminated result. */
    memset(msg, 'z', sizeof msg);
    gerr_wrap(msg, "ctx");
    assert_non_null(memchr(msg, '\0', sizeof msg));
    assert_memory_equal(msg, "ctx: zzz", 8);

    /* Many nested wraps never overflow. */
    gerr_set(msg, "root");
    for (int i = 0; i < 200; i++) {
        gerr_wrap(msg, "layer %d", i);
        assert_true(strlen(msg) < GERR_MSG_SIZE);
    }
    assert_memory_equal(msg, "layer 199: layer 198: ", 22);
}

/* ------------------------------------------------------------------------------------------------
 * buf */

static void test_buf_init_close(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    buf_append(&b, "x", 0); /* nothing to do, no allocation needed */
    assert_int_equal(b.len, 0);
    buf_close(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* Close of a closed buffer is harmless (it is re-initialised). */
    buf_close(&b);
}

static void test_buf_growth(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    /* Grow by odd sizes across many reallocations; content must survive every move. */
    uint8_t chunk[97];
    size_t total = 0;
    for (int round = 0; round < 300; round++) {
        size_t n = (size_t)(round % 97) + 1;
        for (size_t i = 0; i < n; i++) {
            chunk[i] = (uint8_t)(total + i);
        }
        buf_append(&b, chunk, n);
        total += n;
        assert_int_equal(b.len, total);
        assert_true(b.cap >= b.len);
    }
    for (size_t i = 0; i < total; i++) {
        assert_int_equal(b.data[i], (uint8_t)i);
    }

    /* One big append at once. */
    size_t big = 1u << 20;
    uint8_t *p = malloc(big);
    assert_non_null(p);
    memset(p, 0x5a, big);
    buf_append(&b, p, big);
    assert_int_equal(b.len, total + big);
    assert_int_equal(b.data[total], 0x5a);
    assert_int_equal(b.data[total + big - 1], 0x5a);
    assert_int_equal(b.data[total - 1], (uint8_t)(total - 1));
    free(p);
    buf_close(&b);
}

static void test_buf_reserve_reset_zero(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    uint8_t *p = buf_reserve(&b, 100);
    assert_non_null(p);
    assert_int_equal(b.len, 0); /* reserve does not change len */
    assert_true(b.cap >= 100);
    memcpy(p, "hello", 5);
    b.len += 5;
    assert_memory_equal(b.data, "hello", 5);

    uint8_t *z = buf_append_zero(&b, 11);
    assert_ptr_equal(z, b.data + 5);
    assert_int_equal(b.len, 16);
    for (int i = 0; i < 11; i++) {
        assert_int_equal(z[i], 0);
    }

    /* append_zero really zeroes, even over bytes that were used before a reset. */
    size_t cap = b.cap;
    memset(b.data, 0xff, b.len);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap);
    z = buf_append_zero(&b, 16);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(z[i], 0);
    }
    /* Reserve within the capacity keeps the allocation. */
    uint8_t *before = b.data;
    (void)buf_reserve(&b, cap - b.len);
    assert_ptr_equal(b.data, before);
    buf_close(&b);
}

static void test_buf_le_puts(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_put_u64(&b, UINT64_C(0x0102030405060708));
    buf_put_u32(&b, 0x0a0b0c0du);
    buf_put_u8(&b, 0xee);
    buf_put_u64(&b, UINT64_MAX);
    buf_put_u32(&b, 0);
    static const uint8_t want[] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x0d,
                                   0x0c, 0x0b, 0x0a, 0xee, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0,    0,    0,    0};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    buf_close(&b);

    /* Many puts cross growth boundaries. */
    buf_init(&b);
    for (uint64_t i = 0; i < 1000; i++) {
        buf_put_u64(&b, (i % 256) * UINT64_C(0x0101010101010101));
    }
    assert_int_equal(b.len, 8000);
    for (uint64_t i = 0; i < 1000; i++) {
        for (int k = 0; k < 8; k++) {
            assert_int_equal(b.data[i * 8 + (uint64_t)k], (uint8_t)i);
        }
    }
    buf_close(&b);
}

/* ------------------------------------------------------------------------------------------------
 * queue */

struct item {
    int v;
    struct queue link;
};

/* Values of @h in order, into @out (at most @max); returns the count. */
static int queue_values(struct queue *h, int *out, int max)
{
    struct queue *q;
    int n = 0;
    QUEUE_FOREACH (q, h) {
        assert_true(n < max);
        out[n++] = QUEUE_DATA(q, struct item, link)->v;
    }
    /* The backward links agree with the forward ones. */
    int m = 0;
    for (q = h->prev; q != h; q = q->prev) {
        m++;
        assert_int_equal(QUEUE_DATA(q, struct item, link)->v, out[n - m]);
    }
    assert_int_equal(m, n);
    return n;
}

static void expect_queue(struct queue *h, const int *want, int n)
{
    int got[16];
    assert_int_equal(queue_values(h, got, 16), n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(got[i], want[i]);
    }
    assert_int_equal(queue_empty(h), n == 0);
}

static void test_queue_insert_remove(void **state)
{
    (void)state;
    struct queue h;
    queue_init(&h);
    assert_true(queue_empty(&h));
    assert_null(queue_head(&h));

    struct item it[5];
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        queue_init(&it[i].link);
    }
    queue_insert_tail(&h, &it[1].link);
    queue_insert_tail(&h, &it[2].link);
    queue_insert_head(&h, &it[0].link);
    queue_insert_tail(&h, &it[3].link);
    expect_queue(&h, (const int[]){0, 1, 2, 3}, 4);
    assert_ptr_equal(queue_head(&h), &it[0].link);

    queue_remove(&it[2].link);
    expect_queue(&h, (const int[]){0, 1, 3}, 3);
    /* Removed nodes are self-linked: removing twice is harmless. */
    assert_ptr_equal(it[2].link.next, &it[2].link);
    assert_ptr_equal(it[2].link.prev, &it[2].link);
    queue_remove(&it[2].link);
    expect_queue(&h, (const int[]){0, 1, 3}, 3);

    queue_remove(&it[0].link);
    expect_queue(&h, (const int[]){1, 3}, 2);
    queue_remove(&it[3].link);
    queue_remove(&it[1].link);
    expect_queue(&h, NULL, 0);
    assert_null(queue_head(&h));

    /* Drain pattern from the header: queue_head in a while loop. */
    for (int i = 0; i < 5; i++) {
        queue_insert_tail(&h, &it[i].link);
    }
    int drained = 0;
    struct queue *q;
    while ((q = queue_head(&h)) != NULL) {
        assert_int_equal(QUEUE_DATA(q, struct item, link)->v, drained);
        queue_remove(q);
        drained++;
    }
    assert_int_equal(drained, 5);
    assert_true(queue_empty(&h));
}

static void test_queue_move(void **state)
{
    (void)state;
    struct queue a, b;
    queue_init(&a);
    queue_init(&b);
    struct item it[6];
    for (int i = 0; i < 6; i++) {
        it[i].v = i;
    }

    /* Empty into empty. */
    queue_move(&a, &b);
    assert_true(queue_empty(&a));
    assert_true(queue_empty(&b));

    /* Non-empty into empty. */
    queue_insert_tail(&a, &it[0].link);
    queue_insert_tail(&a, &it[1].link);
    queue_move(&a, &b);
    assert_true(queue_empty(&a));
    expect_queue(&b, (const int[]){0, 1}, 2);

    /* Non-empty onto the tail of non-empty. */
    queue_insert_tail(&a, &it[2].link);
    queue_insert_tail(&a, &it[3].link);
    queue_insert_tail(&a, &it[4].link);
    queue_move(&a, &b);
    assert_true(queue_empty(&a));
    expect_queue(&b, (const int[]){0, 1, 2, 3, 4}, 5);

    /* Empty onto non-empty changes nothing. */
    queue_move(&a, &b);
    expect_queue(&b, (const int[]){0, 1, 2, 3, 4}, 5);

    /* A single node, and the source is reusable afterwards. */
    queue_insert_tail(&a, &it[5].link);
    queue_move(&a, &b);
    expect_queue(&b, (const int[]){0, 1, 2, 3, 4, 5}, 6);
    queue_remove(&it[0].link);
    queue_insert_tail(&a, &it[0].link);
    expect_queue(&a, (const int[]){0}, 1);
    expect_queue(&b, (const int[]){1, 2, 3, 4, 5}, 5);
}

static void test_queue_foreach_data(void **state)
{
    (void)state;
    struct queue h;
    queue_init(&h);
    struct item it[10];
    for (int i = 0; i < 10; i++) {
        it[i].v = i * i;
        queue_insert_tail(&h, &it[i].link);
    }
    int sum = 0, count = 0;
    struct queue *q;
    QUEUE_FOREACH (q, &h) {
        struct item *e = QUEUE_DATA(q, struct item, link);
        assert_ptr_equal(e, &it[count]);
        sum += e->v;
        count++;
    }
    assert_int_equal(count, 10);
    assert_int_equal(sum, 285);
}

/* ------------------------------------------------------------------------------------------------
 * clock */

static void test_clock_fake(void **state)
{
    (void)state;
    struct clock_fake f;
    clock_fake_init(&f, 5000000000u, 1700000000000u);
    struct clock *c = &f.base;
    assert_int_equal(c->mono_ns(c), 5000000000u);
    assert_int_equal(c->wall_ms(c), 1700000000000u);
    assert_int_equal(clock_mono_ms(c), 5000);
    assert_int_equal(f.slept, 0);

    /* It never moves on its own. */
    assert_int_equal(c->mono_ns(c), 5000000000u);

    clock_fake_advance(&f, 250000000u); /* 250 ms */
    assert_int_equal(c->mono_ns(c), 5250000000u);
    assert_int_equal(c->wall_ms(c), 1700000000250u);
    assert_int_equal(clock_mono_ms(c), 5250);
    assert_int_equal(f.slept, 0); /* advancing is not sleeping */

    /* Sleep advances both clocks instantly and is recorded. */
    c->sleep_ns(c, 1000000000u);
    assert_int_equal(c->mono_ns(c), 6250000000u);
    assert_int_equal(c->wall_ms(c), 1700000001250u);
    assert_int_equal(f.slept, 1000000000u);
    c->sleep_ns(c, 3000000u);
    assert_int_equal(f.slept, 1003000000u);
    assert_int_equal(c->mono_ns(c), 6253000000u);
    assert_int_equal(c->wall_ms(c), 1700000001253u);
}

/* Sub-millisecond steps must add up on the wall clock as they do on the monotonic one: a retry loop
 * sleeping 500 us at a time for one second has moved wall time by one second. */
static void test_clock_fake_sub_ms_steps(void **state)
{
    (void)state;
    struct clock_fake f;
    clock_fake_init(&f, 0, 1000);
    struct clock *c = &f.base;
    for (int i = 0; i < 2000; i++) {
        c->sleep_ns(c, 500000u);
    }
    assert_int_equal(c->mono_ns(c), 1000000000u);
    assert_int_equal(f.slept, 1000000000u);
    uint64_t wall = c->wall_ms(c);
    if (wall != 2000) {
        fail_msg("2000 sleeps of 0.5 ms: wall_ms moved by %" PRIu64 " ms, mono by 1000 ms", wall - 1000);
    }

    clock_fake_init(&f, 0, 0);
    clock_fake_advance(&f, 600000u);
    clock_fake_advance(&f, 600000u);
    assert_int_equal(c->mono_ns(c), 1200000u);
    assert_int_equal(c->wall_ms(c), 1);
}

static void test_clock_system(void **state)
{
    (void)state;
    struct clock *c = clock_system();
    assert_non_null(c);
    assert_ptr_equal(c, clock_system());
    uint64_t a = c->mono_ns(c);
    uint64_t b = c->mono_ns(c);
    assert_true(b >= a);
    uint64_t wall = c->wall_ms(c);
    assert_true(wall > UINT64_C(1600000000000)); /* after 2020 */
    uint64_t before = c->mono_ns(c);
    c->sleep_ns(c, 2000000u); /* 2 ms: checks the sleep actually waits */
    assert_true(c->mono_ns(c) - before >= 2000000u);
}

/* ------------------------------------------------------------------------------------------------
 * rand */

static void test_rand_range(void **state)
{
    (void)state;
    /* Bounds are inclusive and both ends are reached. */
    bool seen[11] = {false};
    for (int i = 0; i < 10000; i++) {
        uint64_t v = rand_range(10, 20);
        assert_in_range(v, 10, 20);
        seen[v - 10] = true;
    }
    for (int i = 0; i < 11; i++) {
        assert_true(seen[i]);
    }

    assert_int_equal(rand_range(7, 7), 7);
    assert_int_equal(rand_range(0, 0), 0);
    assert_true(rand_range(UINT64_MAX, UINT64_MAX) == UINT64_MAX);

    bool lo = false, hi = false;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = rand_range(5, 6);
        assert_in_range(v, 5, 6);
        lo = lo || v == 5;
        hi = hi || v == 6;
    }
    assert_true(lo && hi);

    /* The full range must not divide by zero (span overflows to 0). */
    for (int i = 0; i < 100; i++) {
        (void)rand_range(0, UINT64_MAX);
    }
    /* Near the top. */
    for (int i = 0; i < 1000; i++) {
        uint64_t v = rand_range(UINT64_MAX - 3, UINT64_MAX);
        assert_true(v >= UINT64_MAX - 3);
    }
}

static void test_rand_bytes(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    assert_int_equal(rand_bytes(a, sizeof a), 0);
    assert_int_equal(rand_bytes(b, sizeof b), 0);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(rand_bytes(a, 0), 0);
}

/* ------------------------------------------------------------------------------------------------
 * mem (small: the rest is exercised by every other test) */

static void test_mem_strings(void **state)
{
    (void)state;
    char *s = mem_strdup("gantry");
    assert_string_equal(s, "gantry");
    mem_free(s);
    s = mem_strndup("gantry", 3);
    assert_string_equal(s, "gan");
    mem_free(s);
    s = mem_strndup("ab", 10);
    assert_string_equal(s, "ab");
    mem_free(s);
    uint8_t *z = mem_zalloc(64);
    for (int i = 0; i < 64; i++) {
        assert_int_equal(z[i], 0);
    }
    z = mem_realloc(z, 128);
    assert_non_null(z);
    assert_int_equal(z[63], 0);
    mem_free(z);
    mem_free(NULL);
}

/* mem_tune_for_server: large blocks stay mapped (and go back to the system when freed) even after
 * glibc would have raised its threshold past them; the operator's GLIBC_TUNABLES wins. */
static void test_mem_tune_for_server(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip(); /* ASan's allocator replaces glibc's: mallopt and mallinfo2 say nothing about it */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    skip();
#endif
#endif
    assert_int_equal(setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4", 1), 0);
    assert_false(mem_tune_for_server());
    assert_int_equal(unsetenv("GLIBC_TUNABLES"), 0);
    assert_true(mem_tune_for_server());
    /* Freeing a mapped 16 MiB block is what moves glibc's dynamic threshold to 16 MiB; a 2 MiB
     * block (more than the free space a small test process has at the heap's top) must then still
     * get a mapping of its own, not grow the heap. */
    void *big = malloc(16u << 20);
    assert_non_null(big);
    free(big);
    struct mallinfo2 before = mallinfo2();
    void *p = malloc(2u << 20);
    assert_non_null(p);
    struct mallinfo2 during = mallinfo2();
    assert_int_equal(during.hblks, before.hblks + 1);
    assert_true(during.hblkhd >= before.hblkhd + (2u << 20));
    free(p);
    struct mallinfo2 after = mallinfo2();
    assert_int_equal(after.hblks, before.hblks);
}

static void test_addr(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    struct sockaddr_in sa;
    char em[GERR_MSG_SIZE];

    assert_int_equal(addr_parse("127.0.0.1:8443", &ss, em), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(addr_port(&ss), 8443);
    assert_true(addr_is_loopback(&ss));
    assert_int_equal(addr_parse("[::1]:0", &ss, em), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_true(addr_is_loopback(&ss));
    assert_int_equal(addr_parse("10.1.2.3:1", &ss, NULL), 0);
    assert_false(addr_is_loopback(&ss));
    assert_false(addr_is_any(&ss));
    struct sockaddr_storage other;
    assert_int_equal(addr_parse("10.1.2.3:2", &other, NULL), 0);
    assert_true(addr_same_host(&ss, &other));
    assert_int_equal(addr_parse("0.0.0.0:2", &other, NULL), 0);
    assert_true(addr_is_any(&other));
    assert_false(addr_same_host(&ss, &other));
    assert_int_equal(addr_parse("[::]:2", &other, NULL), 0);
    assert_true(addr_is_any(&other));
    static const char *const bad[] = {"",
                                      "127.0.0.1",
                                      "127.0.0.1:",
                                      "127.0.0.1:+5",
                                      "127.0.0.1: 5",
                                      "127.0.0.1:65536",
                                      "127.0.0.1:-1",
                                      "localhost:80",
                                      "[::1]80",
                                      "[::1",
                                      ":80",
                                      "1.2.3:80",
                                      "::1:80",
                                      NULL};
    for (int i = 0; bad[i] != NULL; i++) {
        em[0] = '\0';
        if (addr_parse(bad[i], &ss, em) != GERR_INVAL) {
            fail_msg("addr_parse accepted \"%s\"", bad[i]);
        }
        assert_true(em[0] != '\0');
    }
    /* Node addresses: IPv4 only (dqlite 1.11), port 0 only where asked for. */
    assert_int_equal(addr_parse_ipv4("127.0.0.1:7001", &sa, 0), 0);
    assert_int_equal(ntohs(sa.sin_port), 7001);
    assert_int_equal(addr_parse_ipv4("127.0.0.1:0", &sa, 0), GERR_INVAL);
    assert_int_equal(addr_parse_ipv4("127.0.0.1:0", &sa, 1), 0);
    assert_int_equal(addr_parse_ipv4("[::1]:7001", &sa, 1), GERR_INVAL);
    assert_int_equal(addr_parse_ipv4(NULL, &sa, 1), GERR_INVAL);
}

static void test_utf8(void **state)
{
    (void)state;
    size_t at = 99;
    assert_true(utf8_valid("", 0, &at));
    assert_true(utf8_valid("plain ascii", 11, &at));
    assert_true(utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, &at));
    assert_true(utf8_valid("a\0b", 3, &at)); /* NUL is valid UTF-8; callers forbid it separately */
    struct {
        const char *s;
        size_t n, at;
    } bad[] = {
        {"ab\xff", 3, 2},           /* never valid */
        {"\xc0\xaf", 2, 0},         /* overlong '/' */
        {"\xe0\x80\xaf", 3, 0},     /* overlong */
        {"x\xed\xa0\x80", 4, 1},    /* surrogate D800 */
        {"\xf4\x90\x80\x80", 4, 0}, /* above U+10FFFF */
        {"\xe2\x82", 2, 0},         /* truncated */
        {"\xc3\x28", 2, 0},         /* bad continuation */
        {"\x80", 1, 0},             /* lone continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(utf8_valid(bad[i].s, bad[i].n, &at));
        assert_int_equal(at, bad[i].at);
    }
    char *fixed = utf8_sanitize_dup("ok\xff\xc3\xa9\xc3");
    assert_string_equal(fixed, "ok\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd");
    assert_true(utf8_valid(fixed, strlen(fixed), NULL));
    mem_free(fixed);
}

struct jobs_probe {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool release;
    int started;
    char order[64];
    size_t n;
};

static void job_block(void *arg)
{
    struct jobs_probe *p = arg;
    pthread_mutex_lock(&p->mu);
    p->started++;
    pthread_cond_broadcast(&p->cond);
    while (!p->release) {
        pthread_cond_wait(&p->cond, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

struct jobs_mark {
    struct jobs_probe *p;
    char c;
};

static void job_mark(void *arg)
{
    struct jobs_mark *m = arg;
    pthread_mutex_lock(&m->p->mu);
    m->p->order[m->p->n++] = m->c;
    pthread_mutex_unlock(&m->p->mu);
}

static void test_jobs_classes_and_bounds(void **state)
{
    (void)state;
    struct jobs j;
    unsigned caps[JOBS_CLASSES] = {0, 2};
    assert_int_equal(jobs_start(&j, 1, caps), 0);
    struct jobs_probe p = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    /* Hold the only worker, then queue: class 1 is bounded at 2, class 0 is not. */
    assert_int_equal(jobs_submit(&j, 0, job_block, &p), 0);
    pthread_mutex_lock(&p.mu);
    while (p.started == 0) {
        pthread_cond_wait(&p.cond, &p.mu);
    }
    pthread_mutex_unlock(&p.mu);
    struct jobs_mark m[5] = {{&p, 'a'}, {&p, 'b'}, {&p, 'c'}, {&p, 'X'}, {&p, 'Y'}};
    assert_int_equal(jobs_submit(&j, 1, job_mark, &m[0]), 0);
    assert_int_equal(jobs_submit(&j, 1, job_mark, &m[1]), 0);
    assert_int_equal(jobs_submit(&j, 1, job_mark, &m[2]), GERR_TOOBIG);
    assert_int_equal(jobs_submit(&j, 0, job_mark, &m[3]), 0);
    assert_int_equal(jobs_submit(&j, 0, job_mark, &m[4]), 0);
    unsigned depth;
    uint64_t shed;
    jobs_depth(&j, 1, &depth, &shed);
    assert_int_equal(depth, 2);
    assert_int_equal(shed, 1);
    pthread_mutex_lock(&p.mu);
    p.release = true;
    pthread_cond_broadcast(&p.cond);
    pthread_mutex_unlock(&p.mu);
    jobs_stop(&j); /* drains what is queued */
    /* Class 0 first, each class in order; the refused job never ran. */
    assert_int_equal(p.n, 4);
    assert_memory_equal(p.order, "XYab", 4);
}

/* Version-7 UUIDs: the format of version 4 with version 7, the current time in the first 48
 * bits, and later ones sorting after earlier ones (across milliseconds). */
static void test_rand_uuid7(void **state)
{
    (void)state;
    char a[37], b[37];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    rand_uuid7(a);
    assert_int_equal(strlen(a), 36);
    assert_true(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
    assert_int_equal(a[14], '7');
    assert_non_null(strchr("89ab", a[19]));
    char hex[13];
    memcpy(hex, a, 8);
    memcpy(hex + 8, a + 9, 4);
    hex[12] = '\0';
    uint64_t ms = strtoull(hex, NULL, 16);
    assert_true(ms >= before && ms < before + 60000);
    struct timespec two = {0, 2 * 1000000L};
    nanosleep(&two, NULL);
    rand_uuid7(b);
    assert_true(strcmp(a, b) < 0);
    assert_string_not_equal(a, b);
}

/* clock_cond_wait_mono waits until its monotonic deadline (also under libfaketime: ctest runs
 * this binary again with it preloaded, as the Jepsen harness runs gantryd), and wakes on a signal. */
struct cond_pair {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool flag;
};

static void *signal_later(void *arg)
{
    struct cond_pair *p = arg;
    struct timespec d = {0, 20 * 1000000L};
    nanosleep(&d, NULL);
    pthread_mutex_lock(&p->mu);
    p->flag = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void test_cond_wait_mono(void **state)
{
    (void)state;
    struct cond_pair p = {.flag = false};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cond, NULL);
    struct timespec t0, t1, deadline;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_mono_deadline(&deadline, 150);
    pthread_mutex_lock(&p.mu);
    int rv = 0;
    while (rv != ETIMEDOUT) {
        rv = clock_cond_wait_mono(&p.cond, &p.mu, &deadline);
    }
    pthread_mutex_unlock(&p.mu);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t waited_ms = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(waited_ms >= 149); /* never early; how late is the scheduler's business */
    /* A signal before the deadline wakes it with 0. */
    pthread_t th;
    clock_mono_deadline(&deadline, 60000);
    pthread_mutex_lock(&p.mu);
    assert_int_equal(pthread_create(&th, NULL, signal_later, &p), 0);
    rv = 0;
    while (!p.flag && rv == 0) {
        rv = clock_cond_wait_mono(&p.cond, &p.mu, &deadline);
    }
    pthread_mutex_unlock(&p.mu);
    pthread_join(th, NULL);
    assert_int_equal(rv, 0);
    assert_true(p.flag);
    pthread_cond_destroy(&p.cond);
    pthread_mutex_destroy(&p.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_names_and_strings),
        cmocka_unit_test(test_cond_wait_mono),
        cmocka_unit_test(test_mem_tune_for_server),
        cmocka_unit_test(test_rand_uuid7),
        cmocka_unit_test(test_err_from_errno),
        cmocka_unit_test(test_err_set),
        cmocka_unit_test(test_err_wrap),
        cmocka_unit_test(test_err_wrap_truncation),
        cmocka_unit_test(test_buf_init_close),
        cmocka_unit_test(test_buf_growth),
        cmocka_unit_test(test_buf_reserve_reset_zero),
        cmocka_unit_test(test_buf_le_puts),
        cmocka_unit_test(test_queue_insert_remove),
        cmocka_unit_test(test_queue_move),
        cmocka_unit_test(test_queue_foreach_data),
        cmocka_unit_test(test_clock_fake),
        cmocka_unit_test(test_clock_fake_sub_ms_steps),
        cmocka_unit_test(test_clock_system),
        cmocka_unit_test(test_rand_range),
        cmocka_unit_test(test_rand_bytes),
        cmocka_unit_test(test_mem_strings),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_jobs_classes_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
