/* UTF-8 validation and repair (lib/utf8.h). */
#include "lib/utf8.h"

#include <stdint.h>
#include <string.h>

#include "lib/mem.h"

/* Length of the valid sequence at @p (at most @n bytes available), or 0 if it is not valid. */
static size_t seq_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    uint32_t min, cp;
    if ((c & 0xe0) == 0xc0) {
        len = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

bool utf8_valid(const char *s, size_t n, size_t *bad_at)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = seq_len(p + i, n - i);
        if (l == 0) {
            if (bad_at != NULL) {
                *bad_at = i;
            }
            return false;
        }
        i += l;
    }
    return true;
}

char *utf8_sanitize_dup(const char *s)
{
    size_t n = strlen(s);
    /* Each invalid byte becomes at most 3 bytes (U+FFFD). */
    char *out = mem_alloc(3 * n + 1);
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t l = seq_len(p + i, n - i);
        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, p + i, l);
            o += l;
            i += l;
        }
    }
    out[o] = '\0';
    return out;
}
