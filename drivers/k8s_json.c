/* Kubernetes API documents (see k8s_json.h). */
#include "drivers/k8s_json.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "drivers/driver_internal.h"
#include "lib/buf.h"
#include "lib/mem.h"

#define MAX_NAME     253u  /* object names, resource versions, label values we keep */
#define MAX_CONTINUE 4096u /* a continue token */
#define MAX_PAIRS    32u   /* node_selector pairs, tolerations */

const char *const k8s_config_keys[] = {
    "runtime_class", "node_selector", "tolerations", "service_account", "resources",
    "namespace",     "allocation",    "template",    "warm_pool",       NULL};

/* ---- Decoding helpers */

static json_t *load(const char *text, size_t len, char *errmsg)
{
    json_error_t jerr;
    if (len > K8S_MAX_BODY) {
        gerr_set(errmsg, "response of %zu bytes is larger than %u", len, K8S_MAX_BODY);
        return NULL;
    }
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        gerr_set(errmsg, "response is not JSON: %s (byte %d)", jerr.text, jerr.position);
        return NULL;
    }
    if (!json_is_object(j)) {
        gerr_set(errmsg, "response is not a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A string member of at most @max bytes without NUL, or NULL (absent, other type, too long). */
static const char *str_member(json_t *obj, const char *key, size_t max)
{
    json_t *j = json_object_get(obj, key);
    if (!json_is_string(j) || json_string_length(j) > max ||
        strlen(json_string_value(j)) != json_string_length(j)) {
        return NULL;
    }
    return json_string_value(j);
}

static char *dup_member(json_t *obj, const char *key, size_t max)
{
    const char *s = str_member(obj, key, max);
    return s != NULL ? mem_strdup(s) : NULL;
}

/* Copy @s into @out (@len bytes) with anything but printable ASCII replaced by '?'. */
static void copy_printable(char *out, size_t len, const char *s)
{
    size_t i = 0;
    for (; s != NULL && s[i] != '\0' && i + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c >= 0x20 && c <= 0x7e ? (char)c : '?';
    }
    out[i] = '\0';
}

static uint64_t parse_epoch(const char *s)
{
    uint64_t v = 0;
    if (s == NULL || s[0] == '\0' || strlen(s) > 19) {
        return 0;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    return v;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* "2026-11-23T10:00:00Z" (what the API server writes) to Unix ms; 0 if it is anything else. */
static uint64_t parse_time(const char *s)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, se;
    if (s == NULL || strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || s[19] != 'Z' || !digits(s, 4, &y) || !digits(s + 5, 2, &mo) ||
        !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) ||
        !digits(s + 17, 2, &se) || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        se > 60) {
        return 0;
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    return t > 0 ? (uint64_t)t * 1000u : 0;
}

/* ---- Status */

int k8s_status_decode(const char *text, size_t len, struct k8s_status *out)
{
    char err[GERR_MSG_SIZE];
    memset(out, 0, sizeof *out);
    json_t *j = load(text, len, err);
    if (j == NULL) {
        return GERR_PROTO;
    }
    const char *kind = str_member(j, "kind", 64);
    if (kind == NULL || strcmp(kind, "Status") != 0) {
        json_decref(j);
        return GERR_PROTO;
    }
    json_t *code = json_object_get(j, "code");
    if (json_is_integer(code) && json_integer_value(code) >= 0 && json_integer_value(code) < 1000) {
        out->code = (long)json_integer_value(code);
    }
    copy_printable(out->reason, sizeof out->reason, str_member(j, "reason", 1024));
    copy_printable(out->message, sizeof out->message, str_member(j, "message", 65536));
    json_t *details = json_object_get(j, "details");
    copy_printable(out->details_kind, sizeof out->details_kind, str_member(details, "kind", 1024));
    json_t *ra = json_object_get(details, "retryAfterSeconds");
    if (json_is_integer(ra) && json_integer_value(ra) > 0 && json_integer_value(ra) <= 3600) {
        out->retry_after_s = (unsigned)json_integer_value(ra);
    }
    json_t *causes = json_object_get(details, "causes");
    for (size_t i = 0; json_is_array(causes) && i < json_array_size(causes) && i < 64; i++) {
        const char *type = str_member(json_array_get(causes, i), "type", 64);
        out->ns_terminating =
            out->ns_terminating || (type != NULL && strcmp(type, "NamespaceTerminating") == 0);
    }
    json_decref(j);
    return 0;
}

/* ---- Metadata */

void k8s_meta_close(struct k8s_meta *m)
{
    mem_free(m->name);
    mem_free(m->ns);
    mem_free(m->resource_version);
    mem_free(m->uid);
    mem_free(m->gateway_id);
    mem_free(m->managed_by);
    mem_free(m->sandbox_id);
    mem_free(m->gantry_ns);
    mem_free(m->gantry_name);
    memset(m, 0, sizeof *m);
}

static int meta_from(json_t *obj, struct k8s_meta *m, char *errmsg)
{
    json_t *md = json_object_get(obj, "metadata");
    memset(m, 0, sizeof *m);
    if (!json_is_object(md)) {
        gerr_set(errmsg, "object without metadata");
        return GERR_PROTO;
    }
    m->name = dup_member(md, "name", MAX_NAME);
    m->resource_version = dup_member(md, "resourceVersion", MAX_NAME);
    if (m->name == NULL || m->resource_version == NULL || m->name[0] == '\0') {
        gerr_set(errmsg, "object without a name or a resourceVersion");
        k8s_meta_close(m);
        return GERR_PROTO;
    }
    const char *ns = str_member(md, "namespace", MAX_NAME);
    m->ns = mem_strdup(ns != NULL ? ns : "");
    m->uid = dup_member(md, "uid", 128);
    json_t *labels = json_object_get(md, "labels");
    json_t *ann = json_object_get(md, "annotations");
    if ((labels != NULL && !json_is_object(labels)) || (ann != NULL && !json_is_object(ann))) {
        gerr_set(errmsg, "labels or annotations are not objects");
        k8s_meta_close(m);
        return GERR_PROTO;
    }
    m->gateway_id = dup_member(labels, K8S_LABEL_GATEWAY, 63);
    m->managed_by = dup_member(labels, K8S_LABEL_MANAGED, 63);
    m->sandbox_id = dup_member(labels, K8S_LABEL_SANDBOX, 63);
    m->gantry_ns = dup_member(labels, K8S_LABEL_NAMESPACE, 63);
    m->gantry_name = dup_member(labels, K8S_LABEL_NAME, 63);
    m->epoch = parse_epoch(str_member(ann, K8S_ANN_EPOCH, 32));
    m->credentials = str_member(ann, K8S_ANN_CREDENTIALS, MAX_NAME) != NULL;
    const char *claim = str_member(ann, K8S_ANN_CLAIM, 63);
    if (claim != NULL && driver_is_dns_subdomain(claim)) {
        snprintf(m->claim, sizeof m->claim, "%s", claim);
    }
    m->created_at_ms = parse_time(str_member(md, "creationTimestamp", 64));
    m->deleting = json_object_get(md, "deletionTimestamp") != NULL &&
                  !json_is_null(json_object_get(md, "deletionTimestamp"));
    const char *phase = str_member(json_object_get(obj, "status"), "phase", 64);
    m->terminating = phase != NULL && strcmp(phase, "Terminating") == 0;
    return 0;
}

int k8s_meta_decode(const char *text, size_t len, struct k8s_meta *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    json_t *j = load(text, len, errmsg);
    if (j == NULL) {
        return GERR_PROTO;
    }
    int rv = meta_from(j, out, errmsg);
    json_decref(j);
    return rv;
}

/* ---- Sandboxes: mapping the controller's conditions to a phase */

struct condition {
    const char *status; /* "True", "False", "Unknown"; NULL when the condition is absent */
    const char *reason;
    const char *message;
};

static void find_condition(json_t *status, const char *type, struct condition *c)
{
    json_t *conds = json_object_get(status, "conditions");
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < json_array_size(conds); i++) {
        json_t *x = json_array_get(conds, i);
        const char *t = str_member(x, "type", 316);
        if (t != NULL && strcmp(t, type) == 0) {
            c->status = str_member(x, "status", 16);
            c->reason = str_member(x, "reason", 1024);
            c->message = str_member(x, "message", 32768);
            return;
        }
    }
}

static bool is(const char *s, const char *want)
{
    return s != NULL && strcmp(s, want) == 0;
}

/* "<reason>: <message>", either part optional, or @fallback when both are missing. */
static void say(char *out, size_t len, const struct condition *c, const char *fallback)
{
    const char *r = c->reason != NULL && c->reason[0] != '\0' ? c->reason : NULL;
    const char *m = c->message != NULL && c->message[0] != '\0' ? c->message : NULL;
    if (r == NULL && m == NULL) {
        snprintf(out, len, "%s", fallback);
    } else {
        snprintf(out, len, "%s%s%s", r != NULL ? r : "", r != NULL && m != NULL ? ": " : "",
                 m != NULL ? m : "");
    }
}

static enum driver_phase map_phase(json_t *obj, const struct k8s_meta *m, char *msg, size_t len)
{
    json_t *status = json_object_get(obj, "status");
    struct condition ready, finished;
    char tmp[K8S_MAX_MESSAGE] = "";
    enum driver_phase out;
    find_condition(status, "Ready", &ready);
    find_condition(status, "Finished", &finished);
    if (m->deleting) {
        out = DRIVER_PHASE_DELETING;
    } else if (is(finished.status, "True")) {
        out = is(finished.reason, "PodSucceeded") ? DRIVER_PHASE_STOPPED : DRIVER_PHASE_ERROR;
        say(tmp, sizeof tmp, &finished, "finished");
    } else if (is(ready.status, "True")) {
        out = DRIVER_PHASE_READY;
    } else if (is(ready.status, "False")) {
        if (is(ready.reason, "SandboxExpired") || is(ready.reason, "PodSucceeded") ||
            is(ready.reason, "SandboxSuspended")) {
            out = DRIVER_PHASE_STOPPED;
        } else if (is(ready.reason, "PodFailed") || is(ready.reason, "MultiplePods")) {
            out = DRIVER_PHASE_ERROR;
        } else {
            out = DRIVER_PHASE_PROVISIONING;
        }
        say(tmp, sizeof tmp, &ready, "not ready");
    } else if (ready.status != NULL) {
        out = DRIVER_PHASE_UNKNOWN;
        say(tmp, sizeof tmp, &ready, "readiness unknown");
    } else {
        out = DRIVER_PHASE_PROVISIONING;
        snprintf(tmp, sizeof tmp, "waiting for the agent-sandbox controller");
    }
    copy_printable(msg, len, tmp);
    return out;
}

/* status.podIPs (strings, or {"ip": ...} objects as a Pod's status has them) and the owner. */
static void pod_ips_from(json_t *obj, struct k8s_sandbox *p)
{
    json_t *ips = json_object_get(json_object_get(obj, "status"), "podIPs");
    size_t n = 0;
    for (size_t i = 0; json_is_array(ips) && i < json_array_size(ips) && n < K8S_POD_IPS; i++) {
        json_t *x = json_array_get(ips, i);
        const char *ip = json_is_object(x) ? str_member(x, "ip", 45)
                         : json_is_string(x) && strlen(json_string_value(x)) == json_string_length(x)
                             ? json_string_value(x)
                             : NULL;
        unsigned char b[16];
        if (ip != NULL && strlen(ip) < sizeof p->pod_ips[0] &&
            (inet_pton(AF_INET, ip, b) == 1 || inet_pton(AF_INET6, ip, b) == 1)) {
            snprintf(p->pod_ips[n++], sizeof p->pod_ips[0], "%s", ip);
        }
    }
    const char *owner = str_member(json_object_get(json_object_get(obj, "metadata"), "annotations"),
                                   K8S_ANN_OWNER, K8S_OWNER_MAX - 1);
    snprintf(p->owner, sizeof p->owner, "%s", owner != NULL ? owner : "");
}

static int sandbox_from(json_t *obj, struct k8s_sandbox *p, char *errmsg)
{
    char msg[K8S_MAX_MESSAGE];
    memset(p, 0, sizeof *p);
    if (!json_is_object(obj)) {
        gerr_set(errmsg, "a sandbox is not a JSON object");
        return GERR_PROTO;
    }
    int rv = meta_from(obj, &p->meta, errmsg);
    if (rv != 0) {
        return rv;
    }
    p->phase = map_phase(obj, &p->meta, msg, sizeof msg);
    p->message = mem_strdup(msg);
    pod_ips_from(obj, p);
    return 0;
}

void k8s_sandbox_close(struct k8s_sandbox *p)
{
    k8s_meta_close(&p->meta);
    mem_free(p->message);
    memset(p, 0, sizeof *p);
}

int k8s_sandbox_decode(const char *text, size_t len, struct k8s_sandbox *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    json_t *j = load(text, len, errmsg);
    if (j == NULL) {
        return GERR_PROTO;
    }
    int rv = sandbox_from(j, out, errmsg);
    json_decref(j);
    return rv;
}

bool k8s_sandbox_belongs(const struct k8s_meta *m, const char *gateway_id)
{
    return m->gateway_id != NULL && strcmp(m->gateway_id, gateway_id) == 0 && m->sandbox_id != NULL &&
           driver_is_uuid(m->sandbox_id) && m->gantry_ns != NULL && m->gantry_name != NULL;
}

void k8s_sandbox_list_close(struct k8s_sandbox_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        k8s_sandbox_close(&l->items[i]);
    }
    mem_free(l->items);
    mem_free(l->next);
    mem_free(l->resource_version);
    memset(l, 0, sizeof *l);
}

int k8s_sandbox_list_decode(const char *text, size_t len, struct k8s_sandbox_list *out, char *errmsg)
{
    int rv = 0;
    memset(out, 0, sizeof *out);
    json_t *j = load(text, len, errmsg);
    if (j == NULL) {
        return GERR_PROTO;
    }
    json_t *items = json_object_get(j, "items");
    if (!json_is_array(items) && !json_is_null(items)) {
        gerr_set(errmsg, "a list without an items array");
        rv = GERR_PROTO;
    } else if (json_array_size(items) > K8S_MAX_ITEMS) {
        gerr_set(errmsg, "a list page of %zu items (at most %u)", json_array_size(items), K8S_MAX_ITEMS);
        rv = GERR_TOOBIG;
    }
    if (rv == 0 && json_array_size(items) > 0) {
        out->items = mem_zalloc(json_array_size(items) * sizeof *out->items);
    }
    for (size_t i = 0; rv == 0 && i < json_array_size(items); i++) {
        rv = sandbox_from(json_array_get(items, i), &out->items[i], errmsg);
        if (rv == 0) {
            out->n++;
        }
    }
    const char *next = str_member(json_object_get(j, "metadata"), "continue", MAX_CONTINUE);
    if (rv == 0 && next != NULL && next[0] != '\0') {
        out->next = mem_strdup(next);
    }
    const char *lrv = str_member(json_object_get(j, "metadata"), "resourceVersion", MAX_NAME);
    if (rv == 0 && lrv != NULL && lrv[0] != '\0') {
        out->resource_version = mem_strdup(lrv);
    }
    json_decref(j);
    if (rv != 0) {
        k8s_sandbox_list_close(out);
    }
    return rv;
}

/* ---- Discovery */

int k8s_api_group_decode(const char *text, size_t len, unsigned *served, char *errmsg)
{
    *served = 0;
    json_t *j = load(text, len, errmsg);
    if (j == NULL) {
        return GERR_PROTO;
    }
    const char *kind = str_member(j, "kind", 64), *name = str_member(j, "name", MAX_NAME);
    json_t *versions = json_object_get(j, "versions");
    int rv = 0;
    if (kind == NULL || strcmp(kind, "APIGroup") != 0 || name == NULL ||
        strcmp(name, K8S_SANDBOX_GROUP) != 0 || !json_is_array(versions)) {
        gerr_set(errmsg, "not the APIGroup document of " K8S_SANDBOX_GROUP);
        rv = GERR_PROTO;
    }
    unsigned out = 0;
    for (size_t i = 0; rv == 0 && i < json_array_size(versions); i++) {
        const char *v = str_member(json_array_get(versions, i), "version", 64);
        out |= v != NULL && strcmp(v, K8S_SANDBOX_V1BETA1) == 0    ? K8S_SERVES_V1BETA1
               : v != NULL && strcmp(v, K8S_SANDBOX_V1ALPHA1) == 0 ? K8S_SERVES_V1ALPHA1
                                                                   : 0u;
    }
    json_decref(j);
    if (rv == 0) {
        *served = out;
    }
    return rv;
}

/* ---- Watch events */

void k8s_watch_event_close(struct k8s_watch_event *e)
{
    k8s_sandbox_close(&e->object);
    mem_free(e->resource_version);
    memset(e, 0, sizeof *e);
}

int k8s_watch_event_decode(const char *text, size_t len, struct k8s_watch_event *out, char *errmsg)
{
    static const char *const types[] = {"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", NULL};
    memset(out, 0, sizeof *out);
    json_t *j = load(text, len, errmsg);
    if (j == NULL) {
        return GERR_PROTO;
    }
    const char *type = str_member(j, "type", 16);
    json_t *obj = json_object_get(j, "object");
    int rv = 0;
    for (int i = 0; type != NULL && types[i] != NULL; i++) {
        if (strcmp(type, types[i]) == 0) {
            out->type = (enum k8s_watch_type)(i + 1);
        }
    }
    if (out->type == 0 || !json_is_object(obj)) {
        gerr_set(errmsg, "a watch event without a known type and an object");
        rv = GERR_PROTO;
    } else if (out->type == K8S_WATCH_ERROR) {
        char *doc = json_dumps(obj, JSON_COMPACT);
        rv = doc != NULL ? k8s_status_decode(doc, strlen(doc), &out->status) : GERR_PROTO;
        free(doc);
        if (rv != 0) {
            gerr_set(errmsg, "a watch ERROR event without a Status");
        }
    } else if (out->type == K8S_WATCH_BOOKMARK) {
        const char *brv = str_member(json_object_get(obj, "metadata"), "resourceVersion", MAX_NAME);
        if (brv == NULL || brv[0] == '\0') {
            gerr_set(errmsg, "a watch BOOKMARK without a resourceVersion");
            rv = GERR_PROTO;
        } else {
            out->resource_version = mem_strdup(brv);
        }
    } else if ((rv = sandbox_from(obj, &out->object, errmsg)) == 0) {
        out->resource_version = mem_strdup(out->object.meta.resource_version);
    }
    json_decref(j);
    if (rv != 0) {
        k8s_watch_event_close(out);
    }
    return rv;
}

/* ---- driver_config values */

static bool quantity_ok(const char *q)
{
    static const char *const suffixes[] = {"",   "m",  "k",  "M",  "G",  "T",  "P", "E",
                                           "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", NULL};
    size_t i = 0, dots = 0, n = 0;
    for (; q[i] != '\0' && ((q[i] >= '0' && q[i] <= '9') || q[i] == '.'); i++) {
        dots += q[i] == '.';
        n++;
    }
    return n > 0 && dots <= 1 && q[0] != '.' && strlen(q) <= 32 && driver__in_list(suffixes, q + i);
}

static int parse_node_selector(const char *v, json_t **out, char *errmsg)
{
    char *copy = mem_strdup(v), *save = NULL;
    json_t *sel = json_object();
    unsigned n = 0;
    int rv = 0;
    for (char *pair = strtok_r(copy, ",", &save); pair != NULL; pair = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(pair, '=');
        if (eq != NULL) {
            *eq = '\0';
        }
        if (eq == NULL || ++n > MAX_PAIRS || !driver__label_key_ok(pair) || !driver__label_value_ok(eq + 1) ||
            json_object_get(sel, pair) != NULL) {
            gerr_set(errmsg,
                     "driver_config node_selector must be key=value pairs separated by commas (at most %u, "
                     "Kubernetes label syntax, no repeats)",
                     MAX_PAIRS);
            rv = GERR_INVAL;
            break;
        }
        json_object_set_new(sel, pair, json_string(eq + 1));
    }
    mem_free(copy);
    if (rv == 0 && n == 0) {
        gerr_set(errmsg, "driver_config node_selector is empty");
        rv = GERR_INVAL;
    }
    if (rv != 0) {
        json_decref(sel);
        sel = NULL;
    }
    *out = sel;
    return rv;
}

static bool toleration_ok(json_t *t)
{
    static const char *const ops[] = {"Exists", "Equal", NULL};
    static const char *const effects[] = {"NoSchedule", "PreferNoSchedule", "NoExecute", NULL};
    const char *key;
    json_t *v;
    if (!json_is_object(t)) {
        return false;
    }
    json_object_foreach(t, key, v)
    {
        const char *s = json_string_value(v);
        bool ok = (strcmp(key, "key") == 0 && s != NULL && (s[0] == '\0' || driver__label_key_ok(s))) ||
                  (strcmp(key, "operator") == 0 && s != NULL && driver__in_list(ops, s)) ||
                  (strcmp(key, "value") == 0 && s != NULL && driver__label_value_ok(s)) ||
                  (strcmp(key, "effect") == 0 && s != NULL && driver__in_list(effects, s)) ||
                  (strcmp(key, "tolerationSeconds") == 0 && json_is_integer(v));
        if (!ok) {
            return false;
        }
    }
    return true;
}

static int parse_tolerations(const char *v, json_t **out, char *errmsg)
{
    json_error_t jerr;
    json_t *arr = json_loads(v, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = json_is_array(arr) && json_array_size(arr) <= MAX_PAIRS;
    for (size_t i = 0; ok && i < json_array_size(arr); i++) {
        ok = toleration_ok(json_array_get(arr, i));
    }
    if (!ok) {
        json_decref(arr);
        gerr_set(errmsg,
                 "driver_config tolerations must be a JSON array of at most %u objects with key, operator "
                 "(Exists|Equal), value, effect (NoSchedule|PreferNoSchedule|NoExecute), tolerationSeconds",
                 MAX_PAIRS);
        *out = NULL;
        return GERR_INVAL;
    }
    *out = arr;
    return 0;
}

static bool resource_map_ok(json_t *m)
{
    const char *key;
    json_t *v;
    if (!json_is_object(m) || json_object_size(m) > MAX_PAIRS) {
        return false;
    }
    json_object_foreach(m, key, v)
    {
        if (!driver__label_key_ok(key) || !json_is_string(v) || !quantity_ok(json_string_value(v))) {
            return false;
        }
    }
    return true;
}

static int parse_resources(const char *v, json_t **out, char *errmsg)
{
    json_error_t jerr;
    const char *key;
    json_t *val;
    json_t *obj = json_loads(v, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = json_is_object(obj);
    json_object_foreach(obj, key, val)
    {
        ok = ok && (strcmp(key, "requests") == 0 || strcmp(key, "limits") == 0) && resource_map_ok(val);
    }
    if (!ok) {
        json_decref(obj);
        gerr_set(errmsg,
                 "driver_config resources must be a JSON object {\"requests\": {...}, \"limits\": {...}} "
                 "mapping resource names to quantities such as \"500m\" or \"2Gi\"");
        *out = NULL;
        return GERR_INVAL;
    }
    *out = obj;
    return 0;
}

/* The pod spec members that driver_config sets, checked; added to @pod_spec and @container. */
static int apply_config(const struct driver_sandbox_spec *s, json_t *pod_spec, json_t *container,
                        char *errmsg)
{
    for (size_t i = 0; i < s->n_driver_config; i++) {
        const char *k = s->driver_config[i].key, *v = s->driver_config[i].value;
        json_t *j = NULL;
        int rv = 0;
        if (strcmp(k, "namespace") == 0) { /* the object's namespace, not the pod spec's (drivers/k8s.c) */
            if (!driver_is_dns_label(v)) {
                gerr_set(errmsg,
                         "driver_config namespace must be a DNS-1123 label (a Kubernetes namespace name)");
                return GERR_INVAL;
            }
            continue;
        }
        if (strcmp(k, "runtime_class") == 0 || strcmp(k, "service_account") == 0) {
            if (!driver_is_dns_subdomain(v)) {
                gerr_set(errmsg, "driver_config %s must be a DNS subdomain (a Kubernetes object name)", k);
                return GERR_INVAL;
            }
            json_object_set_new(pod_spec, k[0] == 'r' ? "runtimeClassName" : "serviceAccountName",
                                json_string(v));
            if (k[0] == 's') {
                json_object_set_new(pod_spec, "automountServiceAccountToken", json_true());
            }
            continue;
        }
        if (strcmp(k, "node_selector") == 0 && (rv = parse_node_selector(v, &j, errmsg)) == 0) {
            json_object_set_new(pod_spec, "nodeSelector", j);
        } else if (strcmp(k, "tolerations") == 0 && (rv = parse_tolerations(v, &j, errmsg)) == 0) {
            json_object_set_new(pod_spec, "tolerations", j);
        } else if (strcmp(k, "resources") == 0 && (rv = parse_resources(v, &j, errmsg)) == 0) {
            json_object_update(json_object_get(container, "resources"), j);
            json_decref(j);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int k8s_check_config(const struct driver_sandbox_spec *spec, char *errmsg)
{
    json_t *pod_spec = json_object();
    json_t *container = json_pack("{s:{}}", "resources");
    int rv = apply_config(spec, pod_spec, container, errmsg);
    json_decref(pod_spec);
    json_decref(container);
    return rv;
}

/* ---- Encoders */

static char *dump(json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text == NULL) {
        return NULL;
    }
    char *out = mem_strdup(text);
    free(text);
    return out;
}

/* The labels of everything the driver makes: its own and upstream OpenShell's. */
static json_t *labels_for(const char *gateway_id, const char *gantry_ns)
{
    json_t *l = json_pack("{s:s,s:s,s:s,s:s}", K8S_LABEL_GATEWAY, gateway_id, K8S_LABEL_MANAGED,
                          K8S_MANAGED_BY, OS_LABEL_MANAGED, OS_MANAGED_BY, OS_LABEL_GATEWAY, gateway_id);
    if (gantry_ns != NULL) {
        json_object_set_new(l, K8S_LABEL_NAMESPACE, json_string(gantry_ns));
        json_object_set_new(l, OS_LABEL_NAMESPACE, json_string(gantry_ns));
    }
    return l;
}

static json_t *epoch_annotations(uint64_t epoch)
{
    char e[24];
    snprintf(e, sizeof e, "%llu", (unsigned long long)epoch);
    return json_pack("{s:s}", K8S_ANN_EPOCH, e);
}

/* Whether the prefix of label key @key (the part before '/') is @domain or a subdomain of it. */
static bool prefix_under(const char *key, const char *domain)
{
    const char *slash = strchr(key, '/');
    if (slash == NULL) {
        return false;
    }
    size_t n = (size_t)(slash - key), d = strlen(domain);
    return (n == d && strncmp(key, domain, d) == 0) ||
           (n > d && key[n - d - 1] == '.' && strncmp(key + n - d, domain, d) == 0);
}

int k8s_check_labels(const struct driver_sandbox_spec *spec, char *errmsg)
{
    static const char *const reserved[] = {"kubernetes.io", "k8s.io",       "x-k8s.io",
                                           "gantry.dev",    "openshell.ai", NULL};
    for (size_t i = 0; i < spec->n_labels; i++) {
        for (int r = 0; reserved[r] != NULL; r++) {
            if (prefix_under(spec->labels[i].key, reserved[r])) {
                gerr_set(
                    errmsg,
                    "label %s: prefixes under %s/ are reserved (Kubernetes, the agent-sandbox controller and "
                    "Gantry give them meaning)",
                    spec->labels[i].key, reserved[r]);
                return GERR_INVAL;
            }
        }
    }
    return 0;
}

/* NULL if every command argument and environment value is valid UTF-8 (JSON needs it), else
 * the reason. */
static int check_utf8(const struct driver_sandbox_spec *s, char *errmsg)
{
    for (size_t i = 0; i < s->n_command + s->n_env; i++) {
        const char *v = i < s->n_command ? s->command[i] : s->env[i - s->n_command].value;
        json_t *j = json_string(v);
        if (j == NULL) {
            gerr_set(errmsg, "%s %zu is not valid UTF-8",
                     i < s->n_command ? "command argument" : "environment value",
                     i < s->n_command ? i : i - s->n_command);
            return GERR_INVAL;
        }
        json_decref(j);
    }
    return 0;
}

/* The restricted Pod Security Standard, for the sandbox's pod and its one container. */
#define SANDBOX_UID 65534

/* Whether a credential of @s sets environment variable @name (it wins over the spec's own). */
static bool credential_sets(const struct driver_sandbox_spec *s, const char *name)
{
    for (size_t i = 0; i < s->n_credentials; i++) {
        if (s->credentials[i].env != NULL && strcmp(s->credentials[i].env, name) == 0) {
            return true;
        }
    }
    return false;
}

/* "<provider>.<key>" into @out (@len bytes); false when it does not fit. */
static bool credential_data_key(const struct driver_credential *c, char *out, size_t len)
{
    int n = snprintf(out, len, "%s.%s", c->provider, c->key);
    return n > 0 && (size_t)n < len;
}

#define DATA_KEY_MAX 256u /* provider (63) + '.' + key (DRIVER_CREDENTIAL_KEY_MAX), with room */

static json_t *container_for(const struct k8s_sandbox_params *p)
{
    const struct driver_sandbox_spec *s = p->spec;
    json_t *cmd = json_array();
    json_t *env = json_array();
    for (size_t i = 0; i < s->n_command; i++) {
        json_array_append_new(cmd, json_string(s->command[i]));
    }
    for (size_t i = 0; i < s->n_env; i++) {
        if (!credential_sets(s, s->env[i].key)) {
            json_array_append_new(env,
                                  json_pack("{s:s,s:s}", "name", s->env[i].key, "value", s->env[i].value));
        }
    }
    for (size_t i = 0; i < s->n_credentials; i++) {
        char dk[DATA_KEY_MAX];
        if (s->credentials[i].env != NULL && credential_data_key(&s->credentials[i], dk, sizeof dk)) {
            json_array_append_new(env, json_pack("{s:s,s:{s:{s:s,s:s}}}", "name", s->credentials[i].env,
                                                 "valueFrom", "secretKeyRef", "name", p->credentials_secret,
                                                 "key", dk));
        }
    }
    k8s_egress_env(env, p->egress, s);
    return json_pack("{s:s,s:s,s:o,s:o,s:{},s:{s:b,s:b,s:b,s:{s:[s]},s:{s:s}}}", "name", "sandbox", "image",
                     s->image, "command", cmd, "env", env, "resources", "securityContext",
                     "allowPrivilegeEscalation", 0, "privileged", 0, "runAsNonRoot", 1, "capabilities",
                     "drop", "ALL", "seccompProfile", "type", "RuntimeDefault");
}

static json_t *pod_spec_for(const struct k8s_sandbox_params *p)
{
    json_t *pod = json_pack(
        "{s:s,s:b,s:b,s:i,s:{s:b,s:i,s:i,s:{s:s}}}", "restartPolicy", "Never", "automountServiceAccountToken",
        0, "enableServiceLinks", 0, "terminationGracePeriodSeconds", 10, "securityContext", "runAsNonRoot", 1,
        "runAsUser", SANDBOX_UID, "runAsGroup", SANDBOX_UID, "seccompProfile", "type", "RuntimeDefault");
    if (p->image_pull_secrets != NULL && p->image_pull_secrets[0] != NULL) {
        json_t *ips = json_array();
        for (size_t i = 0; p->image_pull_secrets[i] != NULL; i++) {
            json_array_append_new(ips, json_pack("{s:s}", "name", p->image_pull_secrets[i]));
        }
        json_object_set_new(pod, "imagePullSecrets", ips);
    }
    return pod;
}

/* The credentials volume and its mount (a spec with credentials only). The volume is optional so
 * that a key left out of a later set (driver_update_credentials) only loses its file: kubelet
 * refuses to refresh a volume at all while a non-optional item names a missing key. The Secret is
 * made before the Sandbox, so the pod never starts without it. */
static void add_credentials(const struct k8s_sandbox_params *p, json_t *pod, json_t *container)
{
    const struct driver_sandbox_spec *s = p->spec;
    if (s->n_credentials == 0) {
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < s->n_credentials; i++) {
        char dk[DATA_KEY_MAX], path[DATA_KEY_MAX];
        if (credential_data_key(&s->credentials[i], dk, sizeof dk)) {
            snprintf(path, sizeof path, "%s/%s", s->credentials[i].provider, s->credentials[i].key);
            json_array_append_new(items, json_pack("{s:s,s:s}", "key", dk, "path", path));
        }
    }
    json_object_set_new(pod, "volumes",
                        json_pack("[{s:s,s:{s:s,s:i,s:b,s:o}}]", "name", K8S_CREDENTIALS_VOLUME, "secret",
                                  "secretName", p->credentials_secret, "defaultMode", K8S_CREDENTIALS_MODE,
                                  "optional", 1, "items", items));
    json_object_set_new(json_object_get(pod, "securityContext"), "fsGroup", json_integer(SANDBOX_UID));
    json_object_set_new(container, "volumeMounts",
                        json_pack("[{s:s,s:s,s:b}]", "name", K8S_CREDENTIALS_VOLUME, "mountPath",
                                  DRIVER_CREDENTIALS_DIR, "readOnly", 1));
}

/* gpu_count becomes a limit on the GPU resource, unless driver_config resources set one. */
static void add_gpu_limit(json_t *container, const struct k8s_sandbox_params *p)
{
    char n[16];
    json_t *res = json_object_get(container, "resources");
    if (p->spec->gpu_count == 0) {
        return;
    }
    if (json_object_get(res, "limits") == NULL) {
        json_object_set_new(res, "limits", json_object());
    }
    json_t *limits = json_object_get(res, "limits");
    if (json_object_get(limits, p->gpu_resource) == NULL) {
        snprintf(n, sizeof n, "%u", p->spec->gpu_count);
        json_object_set_new(limits, p->gpu_resource, json_string(n));
    }
}

/* RFC 3339 UTC of Unix ms @ms, whole seconds. */
static void rfc3339(uint64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int k8s_sandbox_manifest(const struct k8s_sandbox_params *p, char **out, char *errmsg)
{
    const struct driver_sandbox_spec *s = p->spec;
    *out = NULL;
    if (s->image == NULL || s->image[0] == '\0') {
        gerr_set(errmsg, "the kubernetes driver needs an image");
        return GERR_INVAL;
    }
    int rv = check_utf8(s, errmsg);
    if (rv != 0 || (rv = k8s_check_labels(s, errmsg)) != 0) {
        return rv;
    }
    if (s->n_credentials > 0 &&
        (p->credentials_secret == NULL || !driver_is_dns_subdomain(p->credentials_secret))) {
        gerr_set(errmsg, "a sandbox with credentials needs the name of its credentials Secret");
        return GERR_INVAL;
    }
    json_t *labels = labels_for(p->gateway_id, s->namespace);
    json_t *ann = epoch_annotations(p->epoch);
    json_t *container = container_for(p);
    json_t *pod_spec = pod_spec_for(p);
    rv = apply_config(s, pod_spec, container, errmsg);
    add_gpu_limit(container, p);
    add_credentials(p, pod_spec, container);
    json_object_set_new(labels, K8S_LABEL_SANDBOX, json_string(s->id));
    json_object_set_new(labels, K8S_LABEL_NAME, json_string(s->name));
    json_object_set_new(labels, OS_LABEL_SANDBOX, json_string(s->id));
    json_object_set_new(labels, OS_LABEL_NAME, json_string(s->name));
    for (size_t i = 0; i < s->n_labels; i++) {
        json_object_set_new(labels, s->labels[i].key, json_string(s->labels[i].value));
    }
    if (s->owner != NULL && s->owner[0] != '\0') {
        json_object_set_new(ann, K8S_ANN_OWNER, json_string(s->owner));
    }
    if (s->n_credentials > 0) {
        json_object_set_new(ann, K8S_ANN_CREDENTIALS, json_string(p->credentials_secret));
    }
    json_object_set_new(pod_spec, "containers", json_pack("[o]", container));
    json_t *spec =
        json_pack("{s:{s:{s:O},s:o}}", "podTemplate", "metadata", "labels", labels, "spec", pod_spec);
    if (s->lifetime_s > 0) {
        char when[32];
        rfc3339(p->now_ms + s->lifetime_s * 1000u, when);
        json_object_set_new(spec, "shutdownTime", json_string(when));
        json_object_set_new(spec, "shutdownPolicy", json_string("Retain"));
    }
    json_t *sbx = json_pack("{s:s,s:s,s:{s:s,s:s,s:o,s:o},s:o}", "apiVersion", p->api_version, "kind",
                            K8S_SANDBOX_KIND, "metadata", "name", p->object_name, "namespace",
                            p->k8s_namespace, "labels", labels, "annotations", ann, "spec", spec);
    if (rv != 0) {
        json_decref(sbx);
        return rv;
    }
    *out = dump(sbx);
    if (*out == NULL) {
        gerr_set(errmsg, "cannot encode the sandbox");
        return GERR_INTERNAL;
    }
    size_t size = strlen(*out);
    if (size > K8S_MAX_OBJECT) {
        mem_free(*out);
        *out = NULL;
        gerr_set(
            errmsg,
            "the sandbox's Kubernetes object would be %zu bytes; the kubernetes driver sends at most %u "
            "(the API server and etcd refuse large objects): make the command, environment or labels smaller",
            size, K8S_MAX_OBJECT);
        return GERR_INVAL;
    }
    return 0;
}

/* Every label of a managed namespace: the gateway's and the Pod Security admission labels. */
static json_t *namespace_labels(const char *gateway_id, const char *gantry_ns)
{
    json_t *labels = labels_for(gateway_id, gantry_ns);
    static const char *const modes[] = {"enforce", "audit", "warn"};
    for (int i = 0; i < 3; i++) {
        char k[64], kv[80];
        snprintf(k, sizeof k, "pod-security.kubernetes.io/%s", modes[i]);
        snprintf(kv, sizeof kv, "pod-security.kubernetes.io/%s-version", modes[i]);
        json_object_set_new(labels, k, json_string("restricted"));
        json_object_set_new(labels, kv, json_string("latest"));
    }
    return labels;
}

char *k8s_namespace_manifest(const char *name, const char *gateway_id, const char *gantry_ns, uint64_t epoch)
{
    return dump(json_pack("{s:s,s:s,s:{s:s,s:o,s:o}}", "apiVersion", "v1", "kind", "Namespace", "metadata",
                          "name", name, "labels", namespace_labels(gateway_id, gantry_ns), "annotations",
                          epoch_annotations(epoch)));
}

int k8s_namespace_patch(const char *text, size_t len, const char *gateway_id, const char *gantry_ns,
                        char **out, char *errmsg)
{
    *out = NULL;
    json_t *j = load(text, len, errmsg);
    if (j == NULL) {
        return GERR_PROTO;
    }
    json_t *md = json_object_get(j, "metadata");
    json_t *have = json_object_get(md, "labels");
    const char *rv = str_member(md, "resourceVersion", MAX_NAME);
    if (!json_is_object(md) || (have != NULL && !json_is_object(have)) || rv == NULL) {
        gerr_set(errmsg, "Namespace without metadata, labels that are not an object, or no resourceVersion");
        json_decref(j);
        return GERR_PROTO;
    }
    json_t *want = namespace_labels(gateway_id, gantry_ns);
    json_t *change = json_object();
    const char *key;
    json_t *value;
    json_object_foreach(want, key, value)
    {
        if (!json_equal(json_object_get(have, key), value)) {
            json_object_set(change, key, value);
        }
    }
    if (json_object_size(change) > 0) {
        *out = dump(json_pack("{s:{s:s,s:O}}", "metadata", "resourceVersion", rv, "labels", change));
    }
    int n = (int)json_object_size(change);
    json_decref(change);
    json_decref(want);
    json_decref(j);
    if (n > 0 && *out == NULL) {
        gerr_set(errmsg, "cannot encode the Namespace's label patch");
        return GERR_NOMEM;
    }
    return 0;
}

char *k8s_network_policy_manifest(const char *ns, const char *gateway_id)
{
    return dump(json_pack("{s:s,s:s,s:{s:s,s:s,s:o},s:{s:{},s:[s,s]}}", "apiVersion", "networking.k8s.io/v1",
                          "kind", "NetworkPolicy", "metadata", "name", K8S_NETPOL_NAME, "namespace", ns,
                          "labels", labels_for(gateway_id, NULL), "spec", "podSelector", "policyTypes",
                          "Ingress", "Egress"));
}

char *k8s_fence_manifest(const char *name, const char *ns, const char *gateway_id, uint64_t epoch,
                         const char *resource_version)
{
    char e[24];
    snprintf(e, sizeof e, "%llu", (unsigned long long)epoch);
    json_t *cm = json_pack("{s:s,s:s,s:{s:s,s:s,s:o,s:o},s:{s:s}}", "apiVersion", "v1", "kind", "ConfigMap",
                           "metadata", "name", name, "namespace", ns, "labels", labels_for(gateway_id, NULL),
                           "annotations", epoch_annotations(epoch), "data", "epoch", e);
    if (resource_version != NULL) {
        json_object_set_new(json_object_get(cm, "metadata"), "resourceVersion",
                            json_string(resource_version));
    }
    return dump(cm);
}

/* A Secret data key: 1..253 of [-._a-zA-Z0-9]. */
static bool secret_key_ok(const char *k)
{
    size_t n = strlen(k);
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.' || c == '_')) {
            return false;
        }
    }
    return n > 0 && n <= 253;
}

/* Zero every string under "data" and "stringData" of the decoded Secret @j in place (jansson's
 * copies of the document's values) before the document is freed: json_decref hands them back to
 * the allocator as they are. */
static void wipe_secret_data(json_t *j)
{
    static const char *const fields[] = {"data", "stringData"};
    for (size_t f = 0; f < 2; f++) {
        const char *key;
        json_t *v;
        json_t *data = json_object_get(j, fields[f]);
        json_object_foreach(data, key, v)
        {
            if (json_is_string(v)) {
                volatile char *w = (char *)json_string_value(v);
                for (size_t i = 0, n = json_string_length(v); i < n; i++) {
                    w[i] = 0;
                }
            }
        }
    }
}

int k8s_secret_copy(const char *text, size_t len, const char *ns, const char *gateway_id, char **out,
                    char *errmsg)
{
    static const char *const types[] = {"kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg", NULL};
    *out = NULL;
    json_t *j = load(text, len, errmsg);
    if (j == NULL) {
        return GERR_PROTO;
    }
    const char *kind = str_member(j, "kind", 64), *type = str_member(j, "type", MAX_NAME);
    const char *name = str_member(json_object_get(j, "metadata"), "name", MAX_NAME);
    json_t *data = json_object_get(j, "data");
    int rv = 0;
    if ((kind != NULL && strcmp(kind, "Secret") != 0) || name == NULL || !driver_is_dns_subdomain(name) ||
        !json_is_object(data)) {
        gerr_set(errmsg, "not a Secret with a name and data");
        rv = GERR_PROTO;
    } else if (type == NULL || !driver__in_list(types, type)) {
        gerr_set(errmsg,
                 "Secret %s is of type %s: only image pull secrets (kubernetes.io/dockerconfigjson, "
                 "kubernetes.io/dockercfg) are copied into sandbox namespaces",
                 name, type != NULL ? type : "(none)");
        rv = GERR_PERM;
    }
    const char *key;
    json_t *v;
    if (rv == 0) {
        json_object_foreach(data, key, v)
        {
            if (!json_is_string(v) || !secret_key_ok(key)) {
                gerr_set(errmsg, "Secret %s: data values must be base64 strings under valid keys", name);
                rv = GERR_PROTO;
                break;
            }
        }
    }
    if (rv == 0) {
        *out = dump(json_pack("{s:s,s:s,s:{s:s,s:s,s:o},s:s,s:O}", "apiVersion", "v1", "kind", "Secret",
                              "metadata", "name", name, "namespace", ns, "labels",
                              labels_for(gateway_id, NULL), "type", type, "data", data));
        if (*out == NULL) {
            gerr_set(errmsg, "Secret %s: cannot encode its copy", name);
            rv = GERR_NOMEM;
        }
    }
    wipe_secret_data(j); /* the copy (*out) is the caller's to wipe */
    json_decref(j);
    return rv;
}

static const char b64_alphabet_dec[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a standard base64 character, or -1. */
static int b64_value(char c)
{
    const char *p = c != '\0' ? strchr(b64_alphabet_dec, c) : NULL;
    return p != NULL ? (int)(p - b64_alphabet_dec) : -1;
}

int k8s_secret_value(const char *text, size_t len, const char *key, char **out, char *errmsg)
{
    json_error_t jerr;
    *out = NULL;
    json_t *j = json_loadb(text, len, 0, &jerr);
    const char *kind = str_member(j, "kind", 64);
    json_t *data = json_object_get(j, "data");
    json_t *v = json_object_get(data, key);
    const char *enc = json_string_value(v);
    int rv = 0;
    size_t n = enc != NULL ? strlen(enc) : 0;
    if (!json_is_object(j) || (kind != NULL && strcmp(kind, "Secret") != 0)) {
        gerr_set(errmsg, "not a Secret");
        rv = GERR_PROTO;
    } else if (v == NULL) {
        gerr_set(errmsg, "the Secret has no key %.253s", key);
        rv = GERR_NOTFOUND;
    } else if (enc == NULL || n % 4 != 0 || n == 0 || n > K8S_SECRET_VALUE_MAX / 3 * 4 + 4) {
        gerr_set(errmsg, "the Secret's key %.253s is not a base64 value of 1..%u bytes", key,
                 K8S_SECRET_VALUE_MAX);
        rv = GERR_PROTO;
    }
    char *plain = rv == 0 ? mem_alloc(n / 4 * 3 + 1) : NULL;
    size_t at = 0;
    for (size_t i = 0; rv == 0 && i < n; i += 4) {
        int a = b64_value(enc[i]), b = b64_value(enc[i + 1]);
        bool last = i + 4 == n;
        int c = enc[i + 2] == '=' && last && enc[i + 3] == '=' ? -2 : b64_value(enc[i + 2]);
        int d = enc[i + 3] == '=' && last && c != -1 ? -2 : b64_value(enc[i + 3]);
        if (a < 0 || b < 0 || c == -1 || d == -1) {
            gerr_set(errmsg, "the Secret's key %.253s is not standard base64", key);
            rv = GERR_PROTO;
            break;
        }
        plain[at++] = (char)((a << 2) | (b >> 4));
        if (c >= 0) {
            plain[at++] = (char)(((b & 15) << 4) | (c >> 2));
        }
        if (c >= 0 && d >= 0) {
            plain[at++] = (char)(((c & 3) << 6) | d);
        }
    }
    if (rv == 0 && (at == 0 || memchr(plain, '\0', at) != NULL)) {
        gerr_set(errmsg, "the Secret's key %.253s holds an empty value or a NUL byte", key);
        rv = GERR_PROTO;
    }
    if (rv == 0) {
        plain[at] = '\0';
        *out = plain;
    } else if (plain != NULL) {
        volatile char *w = plain;
        for (size_t i = 0; i < n / 4 * 3 + 1; i++) {
            w[i] = 0;
        }
        mem_free(plain);
    }
    /* The decoded document held the value too (and the Secret's other keys): wipe every value
     * jansson copied out of it, not only the one asked for. */
    wipe_secret_data(j);
    json_decref(j);
    return rv;
}

/* ---- Credentials */

void k8s_credentials_secret_name(const char *gateway_id, const char *sandbox_id, char out[128])
{
    snprintf(out, 128, K8S_CREDENTIALS_PREFIX "%.40s-%.36s", gateway_id, sandbox_id);
}

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 (with padding) of @len bytes of @in at @out, which has room for 4 * ceil(len/3). */
static size_t b64_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0u);
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

void k8s_secret_free(char *doc)
{
    if (doc != NULL) {
        volatile char *v = doc;
        for (size_t i = 0; v[i] != '\0'; i++) {
            v[i] = '\0';
        }
        mem_free(doc);
    }
}

int k8s_credentials_secret(const struct k8s_credentials_params *p, char **out, char *errmsg)
{
    size_t data = 0, room = 0;
    *out = NULL;
    for (size_t i = 0; i < p->n; i++) {
        char dk[DATA_KEY_MAX];
        const struct driver_credential *c = &p->creds[i];
        if (!credential_data_key(c, dk, sizeof dk) || !secret_key_ok(dk) ||
            !driver_is_dns_label(c->provider)) {
            gerr_set(errmsg, "credential %.63s/%.128s cannot be a Secret key", c->provider, c->key);
            return GERR_INVAL;
        }
        size_t len = strlen(c->value);
        data += len;
        room += strlen(dk) + 4 * ((len + 2) / 3) + 8; /* "key":"value", */
    }
    if (data > K8S_SECRET_DATA_MAX) {
        gerr_set(
            errmsg,
            "the sandbox's credentials add up to %zu bytes; a Kubernetes Secret holds at most %u: give the "
            "sandbox fewer or smaller provider secrets",
            data, K8S_SECRET_DATA_MAX);
        return GERR_INVAL;
    }
    /* Everything but the data through jansson: nothing secret is in it. */
    json_t *labels = labels_for(p->gateway_id, p->gantry_ns);
    json_object_set_new(labels, K8S_LABEL_SANDBOX, json_string(p->sandbox_id));
    json_object_set_new(labels, K8S_LABEL_NAME, json_string(p->sandbox_name));
    json_object_set_new(labels, OS_LABEL_SANDBOX, json_string(p->sandbox_id));
    json_object_set_new(labels, OS_LABEL_NAME, json_string(p->sandbox_name));
    json_t *secret =
        json_pack("{s:s,s:s,s:{s:s,s:s,s:o},s:s}", "apiVersion", "v1", "kind", "Secret", "metadata", "name",
                  p->name, "namespace", p->k8s_namespace, "labels", labels, "type", "Opaque");
    if (p->owner != NULL) {
        json_object_set_new(json_object_get(secret, "metadata"), "ownerReferences",
                            json_pack("[{s:s,s:s,s:s,s:s,s:b}]", "apiVersion", p->owner->api_version, "kind",
                                      K8S_SANDBOX_KIND, "name", p->owner->name, "uid", p->owner->uid,
                                      "blockOwnerDeletion", 0));
    }
    char *head = dump(secret);
    if (head == NULL) {
        gerr_set(errmsg, "cannot encode the credentials Secret %s", p->name);
        return GERR_NOMEM;
    }
    /* The data is written by hand into one buffer of the exact size, so the plaintext's only copy
     * is the one k8s_secret_free wipes (no jansson string, no buffer left behind by a realloc).
     * Keys need no escaping: Secret key characters only. */
    size_t hlen = strlen(head), o = hlen - 1; /* over the closing brace */
    char *doc = mem_alloc(hlen + room + 16);
    memcpy(doc, head, o);
    mem_free(head);
    memcpy(doc + o, ",\"data\":{", 9);
    o += 9;
    for (size_t i = 0; i < p->n; i++) {
        const struct driver_credential *c = &p->creds[i];
        int n = sprintf(doc + o, "%s\"%s.%s\":\"", i > 0 ? "," : "", c->provider, c->key);
        o += (size_t)n;
        o += b64_encode((const unsigned char *)c->value, strlen(c->value), doc + o);
        doc[o++] = '"';
    }
    memcpy(doc + o, "}}", 3);
    *out = doc;
    return 0;
}

char *k8s_delete_options(const char *resource_version)
{
    return dump(json_pack("{s:s,s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "DeleteOptions",
                          "propagationPolicy", "Background", "preconditions", "resourceVersion",
                          resource_version));
}
