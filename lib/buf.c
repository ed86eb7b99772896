#include "buf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mem.h"

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_close(struct buf *b)
{
    mem_free(b->data);
    buf_init(b);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
}

uint8_t *buf_reserve(struct buf *b, size_t n)
{
    assert(b->len <= b->cap);
    if (b->cap - b->len < n) {
        size_t want = b->len + n;
        size_t cap = b->cap == 0 ? 256 : b->cap;
        assert(want >= b->len); /* no overflow: callers cap peer sizes */
        while (cap < want) {
            cap = cap > SIZE_MAX / 2 ? want : cap * 2;
        }
        b->data = mem_realloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return;
    }
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}

uint8_t *buf_append_zero(struct buf *b, size_t n)
{
    uint8_t *p = buf_reserve(b, n);
    memset(p, 0, n);
    b->len += n;
    return p;
}

void buf_put_u64(struct buf *b, uint64_t v)
{
    uint8_t *p = buf_reserve(b, 8);
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    b->len += 8;
}

void buf_put_u32(struct buf *b, uint32_t v)
{
    uint8_t *p = buf_reserve(b, 4);
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    b->len += 4;
}

void buf_put_u8(struct buf *b, uint8_t v)
{
    *buf_reserve(b, 1) = v;
    b->len += 1;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) {
        return;
    }
    char *p = (char *)buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
