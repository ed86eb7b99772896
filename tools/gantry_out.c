/* The gantry CLI's output: any reply, walked through its protobuf-c descriptor, as JSON; the JSON
 * printed as JSON, YAML or a table (tools/gantry.h). Every command prints through here, so -o
 * works the same everywhere and a new field shows up in json/yaml without CLI changes. */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "tools/gantry.h"

static json_t *scalar(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        return v != NULL ? json_string(v->name) : json_integer(*(const int *)p);
    }
    case PROTOBUF_C_TYPE_STRING:
        return json_string(*(char *const *)p != NULL ? *(char *const *)p : "");
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *enc = malloc(4 * (b->len / 3 + 1) + 1);
        int n = EVP_EncodeBlock((unsigned char *)enc, b->data, (int)b->len);
        json_t *s = json_stringn(enc, n > 0 ? (size_t)n : 0);
        free(enc);
        return s;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p != NULL ? gantry_json(*(ProtobufCMessage *const *)p)
                                                     : json_null();
    }
    return json_null();
}

/* A map field: a repeated message named "...Entry" with exactly the fields key and value. */
static bool is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED) {
        return false;
    }
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->name);
    return d->n_fields == 2 && n > 5 && strcmp(d->name + n - 5, "Entry") == 0 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

json_t *gantry_json(const ProtobufCMessage *m)
{
    json_t *o = json_object();
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *p = (const char *)m + f->offset;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
            /* The members of a oneof share their storage: only the one set is shown, by name. */
            if (*(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id) {
                json_object_set_new(o, f->name, scalar(f, p));
            }
            continue;
        }
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            json_object_set_new(o, f->name, scalar(f, p));
            continue;
        }
        size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
        const char *arr = *(char *const *)p;
        if (is_map(f)) {
            json_t *map = json_object();
            for (size_t k = 0; k < n; k++) {
                const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[k];
                const ProtobufCMessageDescriptor *ed = e->descriptor;
                json_t *v = scalar(&ed->fields[1], (const char *)e + ed->fields[1].offset);
                const char *key = *(char *const *)((const char *)e + ed->fields[0].offset);
                json_object_set_new(map, key != NULL ? key : "", v);
            }
            json_object_set_new(o, f->name, map);
            continue;
        }
        json_t *a = json_array();
        for (size_t k = 0; k < n; k++) {
            json_array_append_new(a, scalar(f, arr + k * elem_size(f)));
        }
        json_object_set_new(o, f->name, a);
    }
    return o;
}

json_t *gantry_json_path(json_t *doc, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = doc;
    for (char *save = NULL, *t = strtok_r(buf, ".", &save); t != NULL && cur != NULL;
         t = strtok_r(NULL, ".", &save)) {
        cur = json_object_get(cur, t);
    }
    return cur;
}

/* A value as table text into @out. */
static void cell(json_t *v, const struct gantry_col *col, char *out, size_t len)
{
    out[0] = '\0';
    if (v == NULL || json_is_null(v)) {
        return;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t sl = col->strip != NULL ? strlen(col->strip) : 0;
        snprintf(out, len, "%s", sl > 0 && strncmp(s, col->strip, sl) == 0 ? s + sl : s);
    } else if (json_is_integer(v) && col->time) {
        json_int_t ms = json_integer_value(v);
        if (ms > 0) {
            time_t t = (time_t)(ms / 1000);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
    } else if (json_is_integer(v)) {
        snprintf(out, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_boolean(v)) {
        snprintf(out, len, "%s", json_is_true(v) ? "yes" : "no");
    } else if (json_is_array(v)) {
        size_t i, at = 0;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            char one[256];
            cell(e, col, one, sizeof one);
            at += (size_t)snprintf(out + at, at < len ? len - at : 0, "%s%s", i > 0 ? "," : "", one);
            if (at >= len) {
                break;
            }
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *e;
        size_t at = 0;
        json_object_foreach(v, k, e)
        {
            char one[256];
            cell(e, col, one, sizeof one);
            at += (size_t)snprintf(out + at, at < len ? len - at : 0, "%s%s=%s", at > 0 ? "," : "", k, one);
            if (at >= len) {
                break;
            }
        }
    } else {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        snprintf(out, len, "%s", s != NULL ? s : "");
        free(s);
    }
}

static void table(json_t *doc, const char *items, const struct gantry_col *cols)
{
    json_t *rows = items != NULL ? gantry_json_path(doc, items) : NULL;
    size_t n_rows = items != NULL ? json_array_size(rows) : 1, n_cols = 0;
    while (cols[n_cols].header != NULL) {
        n_cols++;
    }
    size_t width[32] = {0};
    char(*text)[256] = calloc((n_rows + 1) * n_cols, sizeof *text);
    for (size_t j = 0; j < n_cols && j < 32; j++) {
        snprintf(text[j], sizeof text[j], "%s", cols[j].header);
        width[j] = strlen(cols[j].header);
    }
    for (size_t r = 0; r < n_rows; r++) {
        json_t *row = items != NULL ? json_array_get(rows, r) : doc;
        for (size_t j = 0; j < n_cols && j < 32; j++) {
            char *t = text[(r + 1) * n_cols + j];
            cell(gantry_json_path(row, cols[j].path), &cols[j], t, sizeof text[0]);
            width[j] = strlen(t) > width[j] ? strlen(t) : width[j];
        }
    }
    for (size_t r = 0; r <= n_rows; r++) {
        for (size_t j = 0; j < n_cols && j < 32; j++) {
            if (j + 1 == n_cols) {
                printf("%s\n", text[r * n_cols + j]);
            } else {
                printf("%-*s  ", (int)width[j], text[r * n_cols + j]);
            }
        }
    }
    free(text);
}

static void yaml_scalar(FILE *f, json_t *v)
{
    if (json_is_string(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY); /* a JSON string is a YAML double-quoted scalar */
        fputs(s, f);
        free(s);
    } else if (json_is_object(v)) {
        fputs("{}", f);
    } else if (json_is_array(v)) {
        fputs("[]", f);
    } else {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        fputs(s, f);
        free(s);
    }
}

static bool yaml_nested(json_t *v)
{
    return (json_is_object(v) && json_object_size(v) > 0) || (json_is_array(v) && json_array_size(v) > 0);
}

void gantry_yaml(FILE *f, json_t *doc, int indent)
{
    if (json_is_object(doc)) {
        const char *k;
        json_t *v;
        json_object_foreach(doc, k, v)
        {
            fprintf(f, "%*s%s:", indent, "", k);
            if (yaml_nested(v)) {
                fputc('\n', f);
                gantry_yaml(f, v, indent + 2);
            } else {
                fputc(' ', f);
                yaml_scalar(f, v);
                fputc('\n', f);
            }
        }
    } else if (json_is_array(doc)) {
        size_t i;
        json_t *v;
        json_array_foreach(doc, i, v)
        {
            fprintf(f, "%*s-", indent, "");
            if (json_is_object(v) && json_object_size(v) > 0) {
                /* The first key on the dash's line, the rest aligned under it. */
                const char *k;
                json_t *e;
                bool first = true;
                json_object_foreach(v, k, e)
                {
                    fprintf(f, "%*s%s:", first ? 1 : indent + 2, "", k);
                    first = false;
                    if (yaml_nested(e)) {
                        fputc('\n', f);
                        gantry_yaml(f, e, indent + 4);
                    } else {
                        fputc(' ', f);
                        yaml_scalar(f, e);
                        fputc('\n', f);
                    }
                }
            } else if (yaml_nested(v)) {
                fputc('\n', f);
                gantry_yaml(f, v, indent + 2);
            } else {
                fputc(' ', f);
                yaml_scalar(f, v);
                fputc('\n', f);
            }
        }
    } else {
        fprintf(f, "%*s", indent, "");
        yaml_scalar(f, doc);
        fputc('\n', f);
    }
}

void gantry_print(struct cli *c, json_t *doc, const char *items, const struct gantry_col *cols)
{
    switch (c->out) {
    case GANTRY_OUT_JSON:
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        break;
    case GANTRY_OUT_YAML:
        gantry_yaml(stdout, doc, 0);
        break;
    case GANTRY_OUT_TABLE:
        table(doc, items, cols);
        break;
    }
    fflush(stdout);
}
