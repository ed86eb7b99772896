/* A growable byte buffer. The caller owns the struct; the buffer owns @data.
 *
 *   struct buf b;
 *   buf_init(&b);
 *   buf_append(&b, "abc", 3);
 *   ... b.data[0 .. b.len) ...
 *   buf_close(&b);
 *
 * Growth goes through mem_realloc (aborts on OOM, see mem.h). Callers that fill a buffer from a
 * peer-declared size check that size against their own limit first. */
#ifndef GANTRY_LIB_BUF_H
#define GANTRY_LIB_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data; /* NULL until the first growth */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated */
};

void buf_init(struct buf *b);
void buf_close(struct buf *b); /* frees data; the struct may be re-initialised */
void buf_reset(struct buf *b); /* len = 0, keeps the allocation */

/* Make room for @n more bytes and return a pointer to them (len is not changed). */
uint8_t *buf_reserve(struct buf *b, size_t n);

/* Append @n bytes (copied). */
void buf_append(struct buf *b, const void *p, size_t n);

/* Append @n zero bytes and return a pointer to the first of them. */
uint8_t *buf_append_zero(struct buf *b, size_t n);

/* Append printf-formatted text (no NUL is counted in len; one is written past it). */
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Little-endian fixed-width appends. */
void buf_put_u64(struct buf *b, uint64_t v);
void buf_put_u32(struct buf *b, uint32_t v);
void buf_put_u8(struct buf *b, uint8_t v);

#endif
