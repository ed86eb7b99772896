/* UTF-8: strict validation (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), and
 * a copy with every invalid sequence replaced by U+FFFD, for text that must be stored or shown
 * whatever a peer sent (audit records, log lines). Pure. */
#ifndef GANTRY_LIB_UTF8_H
#define GANTRY_LIB_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Are the @n bytes at @s valid UTF-8? Embedded NULs are valid UTF-8 (callers that forbid them check
 * separately). If not and @bad_at is not NULL, *@bad_at is the offset of the first invalid byte. */
bool utf8_valid(const char *s, size_t n, size_t *bad_at);

/* A heap copy of the NUL-terminated @s with each invalid sequence replaced by U+FFFD (mem_free). */
char *utf8_sanitize_dup(const char *s);

#endif
