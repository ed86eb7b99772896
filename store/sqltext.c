/* SQL text with literals (store/sqltext.h). */
#include "store/sqltext.h"

#include <stdio.h>
#include <string.h>

#include "lib/err.h"

int store__sql_literal(struct buf *out, const struct proto_value *v)
{
    static const char hex[] = "0123456789abcdef";
    switch (v->type) {
    case PROTO_INTEGER:
    case PROTO_BOOLEAN:
        buf_printf(out, "%lld", (long long)v->u.i);
        return 0;
    case PROTO_FLOAT:
        buf_printf(out, "%.17g", v->u.f);
        return 0;
    case PROTO_NULL:
        buf_printf(out, "NULL");
        return 0;
    case PROTO_TEXT:
    case PROTO_ISO8601: {
        if (memchr(v->u.b.s, '\0', v->u.b.n) != NULL) {
            return GERR_INVAL;
        }
        buf_append(out, "'", 1);
        const char *p = v->u.b.s, *end = p + v->u.b.n;
        while (p < end) {
            const char *q = memchr(p, '\'', (size_t)(end - p));
            size_t n = q != NULL ? (size_t)(q - p) : (size_t)(end - p);
            buf_append(out, p, n);
            if (q == NULL) {
                break;
            }
            buf_append(out, "''", 2);
            p = q + 1;
        }
        buf_append(out, "'", 1);
        return 0;
    }
    case PROTO_BLOB: {
        buf_append(out, "X'", 2);
        uint8_t *d = buf_append_zero(out, 2 * v->u.b.n);
        const uint8_t *s = (const uint8_t *)v->u.b.s;
        for (size_t i = 0; i < v->u.b.n; i++) {
            d[2 * i] = (uint8_t)hex[s[i] >> 4];
            d[2 * i + 1] = (uint8_t)hex[s[i] & 15];
        }
        buf_append(out, "'", 1);
        return 0;
    }
    default:
        return GERR_INVAL;
    }
}

int store__sql_append(struct buf *out, const char *sql, const struct proto_value *params, unsigned n)
{
    size_t start = out->len;
    unsigned next = 0; /* the parameter a bare ? takes: one more than the largest seen */
    const char *p = sql;
    while (*p != '\0') {
        char c = *p;
        if (c == '\'' || c == '"' || c == '`') {
            const char *q = p + 1;
            while (*q != '\0' && !(*q == c && q[1] != c)) {
                q += *q == c ? 2 : 1; /* a doubled quote stays inside */
            }
            if (*q == '\0') {
                out->len = start;
                return GERR_INVAL;
            }
            buf_append(out, p, (size_t)(q + 1 - p));
            p = q + 1;
            continue;
        }
        if (c == '?') {
            const char *q = p + 1;
            unsigned idx = 0;
            bool numbered = false;
            while (*q >= '0' && *q <= '9' && idx < 100000) {
                idx = idx * 10 + (unsigned)(*q - '0');
                numbered = true;
                q++;
            }
            if (!numbered) {
                idx = next + 1;
            }
            if (idx == 0 || idx > n || store__sql_literal(out, &params[idx - 1]) != 0) {
                out->len = start;
                return GERR_INVAL;
            }
            if (idx > next) {
                next = idx;
            }
            p = q;
            continue;
        }
        buf_append(out, p, 1);
        p++;
    }
    buf_append(out, ";", 1);
    return 0;
}
