/* The strict request check (wirecheck.h): one bounded pass over a message's wire bytes, guided by
 * its protobuf-c descriptor.
 *
 * On an error the walk unwinds and each level prepends the component of the field it was in, so
 * the path is built right to left into a fixed buffer (a path longer than the buffer keeps its
 * tail and starts with "..."). Indices of repeated fields are computed only then, by counting
 * the field's earlier elements in the enclosing message: the happy path keeps no per-field
 * state. */
#include "server/grpc/wirecheck.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/err.h"
#include "lib/utf8.h"

#define WC_PATH_MAX 240
#define WC_KEY_MAX  40 /* longest map key quoted in a path */

struct wc {
    const struct wirecheck_limits *lim;
    uint64_t fields;
    char reason[160]; /* what is wrong, without the path */
    /* The path, right-aligned: path[start .. WC_PATH_MAX) (NUL at WC_PATH_MAX). */
    char path[WC_PATH_MAX + 1];
    size_t start;
    bool truncated;
};

static int wc_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (p >= end) {
            return -1;
        }
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int wc_error(struct wc *w, int rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int wc_error(struct wc *w, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->reason, sizeof w->reason, fmt, ap);
    va_end(ap);
    return rv;
}

/* Put @s (@n bytes) in front of the path, with a '.' if the path is not empty. */
static void wc_prepend(struct wc *w, const char *s, size_t n)
{
    bool sep = w->start < WC_PATH_MAX;
    size_t need = n + (sep ? 1 : 0);
    if (w->truncated || need > w->start) {
        w->truncated = true;
        return;
    }
    if (sep) {
        w->path[--w->start] = '.';
    }
    w->start -= n;
    memcpy(w->path + w->start, s, n);
}

/* Replace a leading "value" component (a map entry's value) by nothing: the entry itself is
 * named `map["key"]`, which says the same. */
static void wc_strip_map_value(struct wc *w)
{
    const char *p = w->path + w->start;
    size_t n = WC_PATH_MAX - w->start;
    if (n >= 5 && memcmp(p, "value", 5) == 0 && (n == 5 || p[5] == '.')) {
        w->start += n == 5 ? 5 : 6;
    }
}

static bool wc_packable(ProtobufCType t)
{
    return t != PROTOBUF_C_TYPE_STRING && t != PROTOBUF_C_TYPE_BYTES && t != PROTOBUF_C_TYPE_MESSAGE;
}

/* Elements in a packed block of type @t (@n bytes at @p). */
static uint64_t wc_packed_count(ProtobufCType t, const uint8_t *p, size_t n)
{
    switch (t) {
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return n / 4;
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return n / 8;
    default: {
        uint64_t c = 0;
        for (size_t i = 0; i < n; i++) {
            c += (p[i] & 0x80) == 0;
        }
        return c;
    }
    }
}

/* The index of the element of repeated @f that starts at @at: its elements in [msg, at). The
 * bytes were walked already, so they are well formed. */
static uint64_t wc_index(const ProtobufCFieldDescriptor *f, const uint8_t *msg, const uint8_t *at)
{
    uint64_t idx = 0;
    const uint8_t *p = msg;
    while (p < at) {
        uint64_t key, v = 0;
        if (wc_varint(&p, at, &key) != 0) {
            break;
        }
        unsigned wt = (unsigned)(key & 7);
        const uint8_t *val = p;
        if (wt == 0) {
            (void)wc_varint(&p, at, &v);
        } else if (wt == 1) {
            p += 8;
        } else if (wt == 5) {
            p += 4;
        } else if (wt == 2 && wc_varint(&p, at, &v) == 0) {
            val = p;
            p += v;
        } else {
            break;
        }
        if ((key >> 3) != f->id) {
            continue;
        }
        idx += wt == 2 && wc_packable(f->type) ? wc_packed_count(f->type, val, (size_t)v) : 1;
    }
    return idx;
}

static bool wc_is_map_entry(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED ||
        f->descriptor == NULL) {
        return false;
    }
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->name);
    return d->n_fields == 2 && n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->fields[0].id == 1 &&
           strcmp(d->fields[0].name, "key") == 0 && d->fields[1].id == 2 &&
           strcmp(d->fields[1].name, "value") == 0;
}

/* `["key"]` or `[123]` for the map entry at @p (@n bytes), or "" when the key is unfit to show. */
static void wc_map_key(const ProtobufCFieldDescriptor *f, const uint8_t *p, size_t n, char *out, size_t cap)
{
    const ProtobufCMessageDescriptor *entry = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &entry->fields[0];
    const uint8_t *key = NULL;
    uint64_t klen = 0, kint = 0;
    bool have_int = false;
    out[0] = '\0';
    if (p == NULL) {
        return; /* the entry was not even length-delimited */
    }
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t tag, v;
        if (wc_varint(&p, end, &tag) != 0) {
            return;
        }
        unsigned wt = (unsigned)(tag & 7);
        if (wt == 0) {
            if (wc_varint(&p, end, &v) != 0) {
                return;
            }
            if ((tag >> 3) == 1) {
                kint = v;
                have_int = true;
            }
        } else if (wt == 2) {
            if (wc_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p)) {
                return;
            }
            if ((tag >> 3) == 1) {
                key = p;
                klen = v;
            }
            p += v;
        } else if ((wt == 1 || wt == 5) && (size_t)(end - p) >= (wt == 1 ? 8u : 4u)) {
            p += wt == 1 ? 8 : 4;
        } else {
            return;
        }
    }
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        if (key == NULL) {
            snprintf(out, cap, "[\"\"]");
            return;
        }
        if (klen > WC_KEY_MAX) {
            return;
        }
        for (uint64_t i = 0; i < klen; i++) {
            if (key[i] < 0x20 || key[i] > 0x7e || key[i] == '"' || key[i] == '\\') {
                return;
            }
        }
        snprintf(out, cap, "[\"%.*s\"]", (int)klen, (const char *)key);
        return;
    }
    if (kf->type == PROTOBUF_C_TYPE_SINT32 || kf->type == PROTOBUF_C_TYPE_SINT64) {
        int64_t s = (int64_t)(kint >> 1) ^ -(int64_t)(kint & 1);
        snprintf(out, cap, "[%lld]", (long long)s);
    } else if (kf->type == PROTOBUF_C_TYPE_INT32 || kf->type == PROTOBUF_C_TYPE_INT64) {
        snprintf(out, cap, "[%lld]", (long long)(have_int ? (int64_t)kint : 0));
    } else if (have_int || kf->type != PROTOBUF_C_TYPE_BOOL) {
        snprintf(out, cap, "[%llu]", (unsigned long long)kint);
    }
}

/* The walk failed inside field @f, whose element starts at @at in the message beginning at
 * @msg: put the field's component in front of the path. @val/@vlen are the element's bytes
 * (wire type 2) and @in_block the failing element's position inside a packed block. */
static void wc_name(struct wc *w, const ProtobufCFieldDescriptor *f, const uint8_t *msg, const uint8_t *at,
                    const uint8_t *val, size_t vlen, uint64_t in_block)
{
    char comp[WC_PATH_MAX];
    int n;
    if (wc_is_map_entry(f)) {
        char key[WC_KEY_MAX + 8];
        wc_map_key(f, val, vlen, key, sizeof key);
        wc_strip_map_value(w);
        if (key[0] != '\0') {
            n = snprintf(comp, sizeof comp, "%s%s", f->name, key);
        } else {
            n = snprintf(comp, sizeof comp, "%s[%llu]", f->name, (unsigned long long)wc_index(f, msg, at));
        }
    } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        n = snprintf(comp, sizeof comp, "%s[%llu]", f->name,
                     (unsigned long long)(wc_index(f, msg, at) + in_block));
    } else {
        n = snprintf(comp, sizeof comp, "%s", f->name);
    }
    if (n > 0) {
        wc_prepend(w, comp, (size_t)n < sizeof comp ? (size_t)n : sizeof comp - 1);
    }
}

static int wc_count(struct wc *w, uint64_t n)
{
    w->fields += n;
    if (w->lim->max_fields != 0 && w->fields > w->lim->max_fields) {
        return wc_error(w, GERR_TOOBIG, "more than %u fields", w->lim->max_fields);
    }
    return 0;
}

static int wc_enum(struct wc *w, const ProtobufCFieldDescriptor *f, uint64_t v)
{
    /* protobuf-c keeps the low 32 bits as an int32, so judge that value. */
    int32_t value = (int32_t)(uint32_t)v;
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (ed == NULL || protobuf_c_enum_descriptor_get_value(ed, value) != NULL) {
        return 0;
    }
    return wc_error(w, GERR_INVAL, "unknown value %d of enum %s", value, ed->name);
}

static int wc_walk(struct wc *w, const ProtobufCMessageDescriptor *d, const uint8_t *msg, const uint8_t *end,
                   uint32_t depth)
{
    const uint8_t *p = msg;
    while (p < end) {
        const uint8_t *at = p;
        uint64_t key, v;
        if (wc_varint(&p, end, &key) != 0) {
            return wc_error(w, GERR_PROTO, "truncated field key");
        }
        uint64_t number = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (number == 0 || number > 0x1fffffff) {
            return wc_error(w, GERR_PROTO, "bad field number %llu", (unsigned long long)number);
        }
        if (wc_count(w, 1) != 0) {
            return GERR_TOOBIG;
        }
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned)number);
        bool lengthy = f != NULL && !wc_packable(f->type);
        switch (wt) {
        case 0:
            if (wc_varint(&p, end, &v) != 0) {
                return wc_error(w, GERR_PROTO, "truncated varint in field %u", (unsigned)number);
            }
            if (lengthy) {
                wc_error(w, GERR_PROTO, "wire type %u for a length-delimited field", wt);
                wc_name(w, f, msg, at, NULL, 0, 0);
                return GERR_PROTO;
            }
            if (f != NULL && f->type == PROTOBUF_C_TYPE_ENUM && wc_enum(w, f, v) != 0) {
                wc_name(w, f, msg, at, NULL, 0, 0);
                return GERR_INVAL;
            }
            break;
        case 1:
        case 5: {
            size_t size = wt == 1 ? 8 : 4;
            if ((size_t)(end - p) < size) {
                return wc_error(w, GERR_PROTO, "truncated fixed-size field %u", (unsigned)number);
            }
            p += size;
            if (lengthy || (f != NULL && f->type == PROTOBUF_C_TYPE_ENUM)) {
                wc_error(w, GERR_PROTO, "wire type %u does not fit the field's type", wt);
                wc_name(w, f, msg, at, NULL, 0, 0);
                return GERR_PROTO;
            }
            break;
        }
        case 2: {
            if (wc_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p)) {
                return wc_error(w, GERR_PROTO, "length of field %u runs past the message", (unsigned)number);
            }
            const uint8_t *val = p;
            size_t n = (size_t)v;
            p += n;
            if (f == NULL) {
                break;
            }
            int rv = 0;
            uint64_t in_block = 0;
            if (wc_packable(f->type) && f->label != PROTOBUF_C_LABEL_REPEATED) {
                /* Only repeated scalars may be packed; protobuf-c would refuse this too. */
                wc_error(w, GERR_PROTO, "wire type 2 for a scalar field");
                wc_name(w, f, msg, at, val, n, 0);
                return GERR_PROTO;
            }
            switch (f->type) {
            case PROTOBUF_C_TYPE_STRING:
                if (memchr(val, 0, n) != NULL) {
                    rv = wc_error(w, GERR_INVAL, "contains a NUL byte");
                } else if (!utf8_valid((const char *)val, n, NULL)) {
                    rv = wc_error(w, GERR_INVAL, "invalid UTF-8");
                }
                break;
            case PROTOBUF_C_TYPE_BYTES:
                break;
            case PROTOBUF_C_TYPE_MESSAGE:
                if (f->descriptor == NULL) {
                    break;
                }
                if (w->lim->max_depth != 0 && depth + 1 > w->lim->max_depth) {
                    rv = wc_error(w, GERR_TOOBIG, "messages nested deeper than %u levels", w->lim->max_depth);
                    break;
                }
                rv = wc_walk(w, f->descriptor, val, val + n, depth + 1);
                break;
            case PROTOBUF_C_TYPE_ENUM: {
                const uint8_t *q = val, *qend = val + n;
                while (rv == 0 && q < qend) {
                    if (wc_varint(&q, qend, &v) != 0) {
                        rv = wc_error(w, GERR_PROTO, "truncated packed varint");
                    } else if ((rv = wc_count(w, 1)) == 0 && (rv = wc_enum(w, f, v)) == 0) {
                        in_block++;
                    }
                }
                break;
            }
            default:
                rv = wc_count(w, wc_packed_count(f->type, val, n));
                break;
            }
            if (rv != 0) {
                if (rv != GERR_TOOBIG) {
                    wc_name(w, f, msg, at, val, n, in_block);
                }
                return rv;
            }
            break;
        }
        default:
            return wc_error(w, GERR_PROTO, "unsupported wire type %u", wt);
        }
    }
    return 0;
}

int wirecheck_message(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                      const struct wirecheck_limits *limits, char *errmsg)
{
    static const struct wirecheck_limits none = {0, 0};
    struct wc w;
    w.lim = limits != NULL ? limits : &none;
    w.fields = 0;
    w.reason[0] = '\0';
    w.path[WC_PATH_MAX] = '\0';
    w.start = WC_PATH_MAX;
    w.truncated = false;
    int rv = len > 0 ? wc_walk(&w, desc, data, data + len, 0) : 0;
    if (rv == 0) {
        return 0;
    }
    if (w.start == WC_PATH_MAX) {
        gerr_set(errmsg, "%s", w.reason);
    } else {
        gerr_set(errmsg, "%s%s: %s", w.truncated ? "..." : "", w.path + w.start, w.reason);
    }
    return rv;
}
