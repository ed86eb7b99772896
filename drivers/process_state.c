/* The process driver's on-disk formats: state file, bwrap status stream, /proc/<pid>/stat, epoch. */
#include <string.h>

#include <jansson.h>

#include "drivers/driver_internal.h"
#include "drivers/process.h"
#include "lib/mem.h"

#define STATUS_MAX_OBJECTS 16

void process_state_close(struct process_state *st)
{
    mem_free(st->id);
    mem_free(st->ns);
    mem_free(st->name);
    memset(st, 0, sizeof *st);
}

/* ---- State file */

static json_t *kv_object(const struct driver_kv *kv, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        json_object_set_new(o, kv[i].key, json_string(kv[i].value));
    }
    return o;
}

static void add_summary(json_t *root, const struct driver_sandbox_spec *spec)
{
    json_t *cmd = json_array();
    json_t *env = json_array();
    const char *net = driver_kv_get(spec->driver_config, spec->n_driver_config, "network");
    for (size_t i = 0; i < spec->n_command; i++) {
        json_array_append_new(cmd, json_string(spec->command[i]));
    }
    for (size_t i = 0; i < spec->n_env; i++) {
        json_array_append_new(env, json_string(spec->env[i].key)); /* names only: values may be secrets */
    }
    json_object_set_new(root, "owner", json_string(spec->owner != NULL ? spec->owner : ""));
    json_object_set_new(root, "image", json_string(spec->image != NULL ? spec->image : ""));
    json_object_set_new(root, "command", cmd);
    json_object_set_new(root, "env_names", env);
    json_object_set_new(root, "labels", kv_object(spec->labels, spec->n_labels));
    json_object_set_new(root, "network", json_string(net != NULL ? net : "none"));
}

char *process_state_encode(const struct process_state *st, const struct driver_sandbox_spec *spec,
                           size_t *len)
{
    json_t *root = json_pack("{s:i,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "version", 1, "id", st->id,
                             "namespace", st->ns, "name", st->name, "epoch", (json_int_t)st->epoch,
                             "created_at_ms", (json_int_t)st->created_at_ms, "lifetime_s",
                             (json_int_t)st->lifetime_s, "bwrap_pid", (json_int_t)st->bwrap_pid,
                             "bwrap_start", (json_int_t)st->bwrap_start, "init_pid", (json_int_t)st->init_pid,
                             "init_start", (json_int_t)st->init_start, "pidns", (json_int_t)st->pidns);
    if (root == NULL) {
        return NULL;
    }
    if (spec != NULL) {
        add_summary(root, spec);
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text == NULL) {
        return NULL;
    }
    char *out = mem_strdup(text);
    free(text);
    *len = strlen(out);
    return out;
}

static int need_u64(json_t *root, const char *key, uint64_t max, uint64_t *v, char *errmsg)
{
    json_t *j = json_object_get(root, key);
    if (!json_is_integer(j) || json_integer_value(j) < 0 || (uint64_t)json_integer_value(j) > max) {
        gerr_set(errmsg, "\"%s\" must be an integer in 0..%llu", key, (unsigned long long)max);
        return GERR_PROTO;
    }
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

static int need_str(json_t *root, const char *key, bool (*ok)(const char *), char **out, char *errmsg)
{
    json_t *j = json_object_get(root, key);
    const char *s = json_string_value(j);
    if (s == NULL || strlen(s) != json_string_length(j) || !ok(s)) {
        gerr_set(errmsg, "\"%s\" is missing or malformed", key);
        return GERR_PROTO;
    }
    *out = mem_strdup(s);
    return 0;
}

static int decode_pids(json_t *root, struct process_state *st, char *errmsg)
{
    uint64_t bpid, ipid;
    int rv;
    if ((rv = need_u64(root, "bwrap_pid", DRIVER_PROCESS_PID_MAX, &bpid, errmsg)) != 0 ||
        (rv = need_u64(root, "bwrap_start", INT64_MAX, &st->bwrap_start, errmsg)) != 0 ||
        (rv = need_u64(root, "init_pid", DRIVER_PROCESS_PID_MAX, &ipid, errmsg)) != 0 ||
        (rv = need_u64(root, "init_start", INT64_MAX, &st->init_start, errmsg)) != 0 ||
        (rv = need_u64(root, "pidns", INT64_MAX, &st->pidns, errmsg)) != 0) {
        return rv;
    }
    st->bwrap_pid = (long)bpid;
    st->init_pid = (long)ipid;
    return 0;
}

int process_state_decode(const char *text, size_t len, struct process_state *st, char *errmsg)
{
    json_error_t jerr;
    uint64_t version = 0;
    int rv;
    memset(st, 0, sizeof *st);
    if (len > DRIVER_PROCESS_MAX_STATE) {
        gerr_set(errmsg, "state file of %zu bytes is larger than %u", len, DRIVER_PROCESS_MAX_STATE);
        return GERR_PROTO;
    }
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        gerr_set(errmsg, "state file is not a JSON object%s%s", root == NULL ? ": " : "",
                 root == NULL ? jerr.text : "");
        json_decref(root);
        return GERR_PROTO;
    }
    if ((rv = need_u64(root, "version", 1000, &version, errmsg)) != 0 ||
        (rv = need_str(root, "id", driver_is_uuid, &st->id, errmsg)) != 0 ||
        (rv = need_str(root, "namespace", driver_is_dns_label, &st->ns, errmsg)) != 0 ||
        (rv = need_str(root, "name", driver_is_dns_label, &st->name, errmsg)) != 0 ||
        (rv = need_u64(root, "epoch", INT64_MAX, &st->epoch, errmsg)) != 0 ||
        (rv = need_u64(root, "created_at_ms", INT64_MAX, &st->created_at_ms, errmsg)) != 0 ||
        (rv = need_u64(root, "lifetime_s", INT64_MAX, &st->lifetime_s, errmsg)) != 0 ||
        (rv = decode_pids(root, st, errmsg)) != 0) {
        goto err;
    }
    if (version != 1) {
        gerr_set(errmsg, "state file version %llu is not supported", (unsigned long long)version);
        rv = GERR_PROTO;
        goto err;
    }
    json_decref(root);
    return 0;

err:
    process_state_close(st);
    json_decref(root);
    return rv;
}

/* ---- bwrap's --json-status-fd stream */

static void status_apply(json_t *o, struct process_status *out)
{
    json_t *pid = json_object_get(o, "child-pid");
    json_t *ns = json_object_get(o, "pid-namespace");
    json_t *code = json_object_get(o, "exit-code");
    if (json_is_integer(pid) && json_integer_value(pid) > 0 &&
        json_integer_value(pid) <= DRIVER_PROCESS_PID_MAX) {
        out->child_pid = (long)json_integer_value(pid);
    }
    if (json_is_integer(ns) && json_integer_value(ns) > 0) {
        out->pidns = (uint64_t)json_integer_value(ns);
    }
    if (json_is_integer(code) && json_integer_value(code) >= 0 && json_integer_value(code) <= 255) {
        out->exited = true;
        out->exit_code = (int)json_integer_value(code);
    }
}

int process_status_decode(const char *text, size_t len, struct process_status *out, char *errmsg)
{
    size_t off = 0;
    memset(out, 0, sizeof *out);
    for (unsigned n = 0; n < STATUS_MAX_OBJECTS; n++) {
        while (off < len &&
               (text[off] == ' ' || text[off] == '\n' || text[off] == '\t' || text[off] == '\r')) {
            off++;
        }
        if (off == len) {
            return 0;
        }
        json_error_t jerr;
        json_t *o = json_loadb(text + off, len - off, JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &jerr);
        if (o == NULL) {
            /* A partial object at the end is bwrap still writing; anything else is garbage. */
            if (memchr(text + off, '\n', len - off) == NULL) {
                return 0;
            }
            gerr_set(errmsg, "bwrap status: %s", jerr.text);
            memset(out, 0, sizeof *out);
            return GERR_PROTO;
        }
        if (!json_is_object(o) || jerr.position <= 0 || (size_t)jerr.position > len - off) {
            json_decref(o);
            gerr_set(errmsg, "bwrap status: not a sequence of JSON objects");
            memset(out, 0, sizeof *out);
            return GERR_PROTO;
        }
        status_apply(o, out);
        json_decref(o);
        off += (size_t)jerr.position;
    }
    gerr_set(errmsg, "bwrap status: more than %d objects", STATUS_MAX_OBJECTS);
    memset(out, 0, sizeof *out);
    return GERR_PROTO;
}

/* ---- /proc/<pid>/stat */

int process_stat_decode(const char *text, size_t len, struct process_stat *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    /* The command name (field 2) is in parentheses and may itself hold ')' or spaces: the fields
     * that follow start after the last ')'. */
    const char *end = text + len;
    const char *p = NULL;
    for (const char *q = text; q < end; q++) {
        if (*q == ')') {
            p = q;
        }
    }
    if (p == NULL || end - p < 3 || p[1] != ' ') {
        gerr_set(errmsg, "/proc stat: no command field");
        return GERR_PROTO;
    }
    p += 2;
    out->state = *p;
    /* Fields 3.. are space-separated; the start time is field 22, the 20th after ')'. */
    for (int field = 3; field < 22; field++) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (sp == NULL) {
            gerr_set(errmsg, "/proc stat: only %d fields", field);
            return GERR_PROTO;
        }
        p = sp + 1;
    }
    uint64_t v = 0;
    const char *q = p;
    for (; q < end && *q >= '0' && *q <= '9'; q++) {
        if (v > (UINT64_MAX - 9) / 10) {
            gerr_set(errmsg, "/proc stat: start time out of range");
            return GERR_PROTO;
        }
        v = v * 10 + (uint64_t)(*q - '0');
    }
    if (q == p || (q < end && *q != ' ' && *q != '\n')) {
        gerr_set(errmsg, "/proc stat: start time is not a number");
        return GERR_PROTO;
    }
    out->starttime = v;
    return 0;
}

/* ---- The epoch file */

int process_epoch_decode(const char *text, size_t len, uint64_t *epoch, char *errmsg)
{
    uint64_t v = 0;
    size_t n = len > 0 && text[len - 1] == '\n' ? len - 1 : len;
    if (n == 0 || n > 20 || (n > 1 && text[0] == '0')) {
        gerr_set(errmsg, "epoch file: not a decimal number");
        return GERR_PROTO;
    }
    for (size_t i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9' || v > (UINT64_MAX - (uint64_t)(text[i] - '0')) / 10) {
            gerr_set(errmsg, "epoch file: not a decimal number below 2^64");
            return GERR_PROTO;
        }
        v = v * 10 + (uint64_t)(text[i] - '0');
    }
    *epoch = v;
    return 0;
}
