/* gantry.v1.Policies (server/policies_svc.h). */
#include "api/services/policies_svc.h"

#include <fnmatch.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/gate/gate.h"
#include "lib/mem.h"

#define MAX_ENTRIES   64u
#define MAX_PATTERN   256u
#define PORT_MAX      65535u
#define ALSO_ENFORCED "gantry.io/also-enforced"
#define POL_COLS      "policy, resource_version, created_by, updated_at_ms"
#define LIST_FIELDS   4
#define IMAGE_FIELD   "allowed_images"
#define DRIVER_FIELD  "allowed_drivers"
#define DCFG_FIELD    "allowed_driver_config_keys"
#define EGRESS_FIELD  "egress_allow"

/* --- patterns --- */

static bool has_glob(const char *s, size_t n)
{
    for (size_t i = 0; i < n && s[i] != '\0'; i++) {
        if (strchr("*?[\\", s[i]) != NULL) {
            return true;
        }
    }
    return false;
}

/* Does every string glob @p matches also match glob @q? Conservative: false when unsure. */
static bool glob_covers(const char *q, const char *p)
{
    size_t ql = strlen(q);
    if (strcmp(q, p) == 0 || strcmp(q, "*") == 0) {
        return true;
    }
    if (!has_glob(p, strlen(p))) {
        return fnmatch(q, p, 0) == 0;
    }
    return ql > 0 && q[ql - 1] == '*' && !has_glob(q, ql - 1) && strncmp(p, q, ql - 1) == 0;
}

static bool exact_covers(const char *q, const char *p)
{
    return strcmp(q, p) == 0;
}

struct egress {
    char host[MAX_PATTERN + 1];
    unsigned lo, hi;
};

/* "host:port" with port "*", N or N-M. */
static bool egress_parse(const char *s, struct egress *e)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) > MAX_PATTERN) {
        return false;
    }
    snprintf(e->host, sizeof e->host, "%.*s", (int)(colon - s), s);
    for (const char *h = e->host; *h != '\0'; h++) {
        if (!((*h >= 'a' && *h <= 'z') || (*h >= '0' && *h <= '9') || strchr(".*?_-", *h) != NULL)) {
            return false;
        }
    }
    const char *port = colon + 1;
    if (strcmp(port, "*") == 0) {
        e->lo = 1;
        e->hi = PORT_MAX;
        return true;
    }
    char *end = NULL;
    unsigned long lo = strtoul(port, &end, 10), hi = lo;
    if (end == port || (*port < '0' || *port > '9')) {
        return false;
    }
    if (*end == '-') {
        const char *second = end + 1;
        hi = strtoul(second, &end, 10);
        if (end == second || *second < '0' || *second > '9') {
            return false;
        }
    }
    if (*end != '\0' || lo < 1 || hi > PORT_MAX || lo > hi) {
        return false;
    }
    e->lo = (unsigned)lo;
    e->hi = (unsigned)hi;
    return true;
}

static bool egress_covers(const char *q, const char *p)
{
    struct egress a, b;
    return egress_parse(q, &a) && egress_parse(p, &b) && glob_covers(a.host, b.host) && a.lo <= b.lo &&
           b.hi <= a.hi;
}

typedef bool (*covers_fn)(const char *q, const char *p);

/* Is list @n within list @g (empty: any)? @first_out gets the first uncovered entry of @n. */
static bool list_within(char *const *g, size_t ng, char *const *n, size_t nn, covers_fn covers,
                        const char **first_out)
{
    *first_out = NULL;
    if (ng == 0) {
        return true;
    }
    if (nn == 0) {
        return false;
    }
    for (size_t i = 0; i < nn; i++) {
        bool covered = false;
        for (size_t j = 0; j < ng && !covered; j++) {
            covered = covers(g[j], n[i]);
        }
        if (!covered) {
            *first_out = n[i];
            return false;
        }
    }
    return true;
}

static bool any_match(char *const *patterns, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (fnmatch(patterns[i], s, 0) == 0) {
            return true;
        }
    }
    return false;
}

/* --- the lists of a policy, by field --- */

struct list_field {
    const char *name;
    covers_fn covers;
    size_t off_n, off_v;
};

static const struct list_field list_fields[LIST_FIELDS] = {
    {IMAGE_FIELD, glob_covers, offsetof(Gantry__V1__Policy, n_allowed_images),
     offsetof(Gantry__V1__Policy, allowed_images)},
    {DRIVER_FIELD, exact_covers, offsetof(Gantry__V1__Policy, n_allowed_drivers),
     offsetof(Gantry__V1__Policy, allowed_drivers)},
    {DCFG_FIELD, glob_covers, offsetof(Gantry__V1__Policy, n_allowed_driver_config_keys),
     offsetof(Gantry__V1__Policy, allowed_driver_config_keys)},
    {EGRESS_FIELD, egress_covers, offsetof(Gantry__V1__Policy, n_egress_allow),
     offsetof(Gantry__V1__Policy, egress_allow)},
};

static size_t list_n(const Gantry__V1__Policy *p, const struct list_field *f)
{
    return *(const size_t *)((const char *)p + f->off_n);
}

static char **list_v(const Gantry__V1__Policy *p, const struct list_field *f)
{
    return *(char **const *)((const char *)p + f->off_v);
}

static void list_set(Gantry__V1__Policy *p, const struct list_field *f, const Gantry__V1__Policy *from)
{
    *(size_t *)((char *)p + f->off_n) = list_n(from, f);
    *(char ***)((char *)p + f->off_v) = list_v(from, f);
}

/* --- messages appended to a bounded text --- */

static void appendf(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(char *out, size_t len, const char *fmt, ...)
{
    size_t used = strlen(out);
    if (used + 1 >= len) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + used, len - used, fmt, ap);
    va_end(ap);
}

/* --- input validation --- */

static bool pattern_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

static bool driver_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_')) {
            return false;
        }
    }
    return true;
}

static bool entry_ok(const struct list_field *f, const char *s)
{
    struct egress e;
    if (f->covers == egress_covers) {
        return egress_parse(s, &e);
    }
    return f->covers == exact_covers ? driver_name_ok(s) : pattern_ok(s, MAX_PATTERN);
}

static const char *entry_rule(const struct list_field *f)
{
    if (f->covers == egress_covers) {
        return "\"host:port\": host of a-z, 0-9, '.', '_', '-', '*', '?'; port *, N or N-M within 1..65535";
    }
    return f->covers == exact_covers ? "a driver name of a-z, 0-9, '-', '_'"
                                     : "a glob of 1..256 characters without spaces";
}

static bool policy_input_ok(struct gate_ctx *ctx, const Gantry__V1__Policy *p)
{
    if (p == NULL) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "policy is required");
        return false;
    }
    for (size_t i = 0; i < LIST_FIELDS; i++) {
        const struct list_field *f = &list_fields[i];
        if (list_n(p, f) > MAX_ENTRIES) {
            gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "policy.%s: at most %u entries", f->name,
                      MAX_ENTRIES);
            return false;
        }
        for (size_t k = 0; k < list_n(p, f); k++) {
            if (!entry_ok(f, list_v(p, f)[k])) {
                gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "policy.%s[%zu] \"%.100s\" is not %s", f->name,
                          k, list_v(p, f)[k], entry_rule(f));
                return false;
            }
        }
    }
    if (p->max_lifetime_seconds > (uint64_t)INT64_MAX / 1000) {
        gate_fail(ctx, GRPC_STATUS_INVALID_ARGUMENT, "policy.max_lifetime_seconds is out of range");
        return false;
    }
    return true;
}

/* --- tightening --- */

/* Loosening fields: their names (@names) and why (@why), so the names always fit the message. */
struct looser {
    char names[256];
    char why[GERR_MSG_SIZE];
};

static void looser_add(struct looser *l, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void looser_add(struct looser *l, const char *field, const char *fmt, ...)
{
    char detail[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    appendf(l->names, sizeof l->names, "%s%s", l->names[0] ? ", " : "", field);
    appendf(l->why, sizeof l->why, "%s%s: %s", l->why[0] ? "; " : "", field, detail);
}

static void loosen_max(struct looser *l, const char *name, uint64_t g, uint64_t n)
{
    if (g != 0 && n == 0) {
        looser_add(l, name, "unlimited > %" PRIu64, g);
    } else if (g != 0 && n > g) {
        looser_add(l, name, "%" PRIu64 " > %" PRIu64, n, g);
    }
}

/* Every field of @n that allows more than @g (l->names "" if none). */
static void loosening(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, struct looser *l)
{
    memset(l, 0, sizeof *l);
    for (size_t i = 0; i < LIST_FIELDS; i++) {
        const struct list_field *f = &list_fields[i];
        const char *first = NULL;
        if (list_within(list_v(g, f), list_n(g, f), list_v(n, f), list_n(n, f), f->covers, &first)) {
            continue;
        }
        if (first == NULL) {
            looser_add(l, f->name, "empty = any, the gateway's has %zu", list_n(g, f));
        } else {
            looser_add(l, f->name, "\"%.60s\" is outside the gateway's", first);
        }
    }
    loosen_max(l, "max_lifetime_seconds", g->max_lifetime_seconds, n->max_lifetime_seconds);
    loosen_max(l, "max_gpus_per_sandbox", g->max_gpus_per_sandbox, n->max_gpus_per_sandbox);
    if (g->deny_gpus && !n->deny_gpus) {
        looser_add(l, "deny_gpus", "the gateway denies GPUs");
    }
    if (!g->allow_shares && n->allow_shares) {
        looser_add(l, "allow_shares", "the gateway forbids shares");
    }
    if (!g->allow_exec_shares && n->allow_exec_shares) {
        looser_add(l, "allow_exec_shares", "the gateway forbids exec shares");
    }
}

/* --- storage --- */

static Gantry__V1__Policy *policy_default(void)
{
    static const uint8_t none[1] = {0};
    Gantry__V1__Policy *p = gantry__v1__policy__unpack(NULL, 0, none);
    if (p != NULL) {
        p->allow_shares = true;
        p->allow_exec_shares = true;
    }
    return p;
}

void policies_free(Gantry__V1__Policy *p)
{
    if (p != NULL) {
        gantry__v1__policy__free_unpacked(p, NULL);
    }
}

/* The stored policy of row 0 of @rows (POL_COLS), with its meta (pointing into @meta). */
static Gantry__V1__Policy *policy_from_row(const struct proto_rows *rows, const char *ns,
                                           Gantry__V1__ObjectMeta *meta)
{
    const struct proto_value *b = proto_rows_at(rows, 0, 0);
    Gantry__V1__Policy *p =
        b->type == PROTO_BLOB ? gantry__v1__policy__unpack(NULL, b->u.b.n, (const uint8_t *)b->u.b.s) : NULL;
    if (p == NULL) {
        return NULL;
    }
    if (meta != NULL) {
        gantry__v1__object_meta__init(meta);
        meta->namespace_ = (char *)ns;
        meta->name = (char *)ns;
        meta->resource_version = (uint64_t)proto_rows_at(rows, 0, 1)->u.i;
        const struct proto_value *by = proto_rows_at(rows, 0, 2);
        meta->created_by = by->type == PROTO_TEXT ? (char *)by->u.b.s : "";
        meta->updated_at_ms = proto_rows_at(rows, 0, 3)->u.i;
    }
    return p;
}

/* Read the policy of @ns through @tx (or @cl when @tx is NULL): *@out NULL when none is stored. */
static int policy_read(struct store_tx *tx, struct store_client *cl, const char *ns, struct proto_rows *rows,
                       Gantry__V1__Policy **out, Gantry__V1__ObjectMeta *meta)
{
    struct proto_value p[] = {proto_text(ns)};
    const char *sql = "SELECT " POL_COLS " FROM policies WHERE namespace = ?";
    int rv = tx != NULL ? store_tx_query(tx, sql, p, 1, rows) : store_client_query(cl, sql, p, 1, rows);
    *out = NULL;
    if (rv == 0 && rows->n_rows > 0) {
        *out = policy_from_row(rows, ns, meta);
        if (*out == NULL) {
            if (tx != NULL) {
                gerr_set(store_tx_errmsg(tx), "the stored policy of \"%.63s\" does not decode", ns);
            }
            rv = GERR_INTERNAL;
        }
    }
    return rv;
}

int policies_load_tx(struct store_tx *tx, const char *ns, Gantry__V1__Policy **gateway,
                     Gantry__V1__Policy **ns_policy)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    *ns_policy = NULL;
    int rv = policy_read(tx, NULL, "", &rows, gateway, NULL);
    proto_rows_close(&rows);
    if (rv == 0 && *gateway == NULL) {
        *gateway = policy_default();
    }
    if (rv == 0 && ns[0] != '\0') {
        proto_rows_init(&rows, 0);
        rv = policy_read(tx, NULL, ns, &rows, ns_policy, NULL);
        proto_rows_close(&rows);
    }
    if (rv != 0) {
        policies_free(*gateway);
        *gateway = NULL;
    }
    return rv;
}

/* --- enforcement --- */

/* What one policy forbids in a spec: the fields (always fit the message) and why. */
struct violations {
    char fields[160];
    char why[GERR_MSG_SIZE];
};

static void violation(struct violations *v, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void violation(struct violations *v, const char *field, const char *fmt, ...)
{
    char detail[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (strstr(v->fields, field) == NULL) {
        appendf(v->fields, sizeof v->fields, "%s%s", v->fields[0] ? ", " : "", field);
    }
    appendf(v->why, sizeof v->why, "%s%s", v->why[0] ? "; " : "", detail);
}

static void check_driver_config(const Gantry__V1__Policy *p, const Gantry__V1__SandboxSpec *spec,
                                struct violations *v)
{
    if (p->n_allowed_driver_config_keys == 0) {
        return;
    }
    for (size_t i = 0; i < spec->n_driver_config; i++) {
        json_t *o = json_loads(spec->driver_config[i]->value, 0, NULL);
        const char *k;
        json_t *val;
        json_object_foreach(o, k, val)
        {
            char full[256];
            snprintf(full, sizeof full, "%s.%s", spec->driver_config[i]->key, k);
            if (!any_match(p->allowed_driver_config_keys, p->n_allowed_driver_config_keys, full)) {
                violation(v, DCFG_FIELD, "driver_config key \"%.100s\" is not allowed", full);
            }
        }
        json_decref(o);
    }
}

static void check_one(const Gantry__V1__Policy *p, const Gantry__V1__SandboxSpec *spec, const char *driver,
                      struct violations *v)
{
    memset(v, 0, sizeof *v);
    if (p->n_allowed_images > 0 && !any_match(p->allowed_images, p->n_allowed_images, spec->image)) {
        violation(v, IMAGE_FIELD, "image \"%.100s\" matches no allowed pattern", spec->image);
    }
    if (p->max_lifetime_seconds > 0 && spec->lifetime_seconds > p->max_lifetime_seconds) {
        violation(v, "max_lifetime_seconds", "lifetime_seconds %" PRIu64 " > %" PRIu64,
                  spec->lifetime_seconds, p->max_lifetime_seconds);
    }
    if (p->deny_gpus && spec->gpu_count > 0) {
        violation(v, "deny_gpus", "gpu_count %u: GPUs are denied", spec->gpu_count);
    } else if (p->max_gpus_per_sandbox > 0 && spec->gpu_count > p->max_gpus_per_sandbox) {
        violation(v, "max_gpus_per_sandbox", "gpu_count %u > %u", spec->gpu_count, p->max_gpus_per_sandbox);
    }
    if (driver != NULL && driver[0] != '\0' && p->n_allowed_drivers > 0) {
        bool found = false;
        for (size_t i = 0; i < p->n_allowed_drivers && !found; i++) {
            found = strcmp(p->allowed_drivers[i], driver) == 0;
        }
        if (!found) {
            violation(v, DRIVER_FIELD, "driver \"%.63s\" is not allowed", driver);
        }
    }
    check_driver_config(p, spec, v);
}

static int driver_config_ok(const Gantry__V1__SandboxSpec *spec, char *why, size_t len)
{
    for (size_t i = 0; i < spec->n_driver_config; i++) {
        json_t *o = json_loads(spec->driver_config[i]->value, 0, NULL);
        bool ok = json_is_object(o);
        json_decref(o);
        if (!ok) {
            snprintf(why, len, "driver_config[\"%.63s\"] is not a JSON object", spec->driver_config[i]->key);
            return GERR_INVAL;
        }
    }
    return 0;
}

/* "the sandbox violates the gateway policy (f, ...) and the policy of namespace "x" (f, ...): why" */
static void explain(const char *ns, const struct violations *vg, const struct violations *vn, char *why,
                    size_t len)
{
    why[0] = '\0';
    appendf(why, len, "the sandbox violates");
    if (vg->fields[0] != '\0') {
        appendf(why, len, " the gateway policy (%s)", vg->fields);
    }
    if (vn->fields[0] != '\0') {
        appendf(why, len, "%s the policy of namespace \"%.63s\" (%s)", vg->fields[0] != '\0' ? " and" : "",
                ns, vn->fields);
    }
    appendf(why, len, ": %s%s%s", vg->why, vg->why[0] != '\0' && vn->why[0] != '\0' ? "; " : "", vn->why);
}

int policies_check_sandbox(struct store_tx *tx, const char *ns, const Gantry__V1__SandboxSpec *spec,
                           const char *driver, char *why, size_t len)
{
    why[0] = '\0';
    int rv = driver_config_ok(spec, why, len);
    Gantry__V1__Policy *g = NULL, *n = NULL;
    if (rv == 0) {
        rv = policies_load_tx(tx, ns, &g, &n);
    }
    if (rv != 0) {
        if (why[0] == '\0') {
            snprintf(why, len, "%s", store_tx_errmsg(tx));
        }
        return rv;
    }
    struct violations *vg = mem_zalloc(sizeof *vg), *vn = mem_zalloc(sizeof *vn);
    check_one(g, spec, driver, vg);
    if (n != NULL) {
        check_one(n, spec, driver, vn);
    }
    if (vg->fields[0] != '\0' || vn->fields[0] != '\0') {
        explain(ns, vg, vn, why, len);
    }
    mem_free(vg);
    mem_free(vn);
    policies_free(g);
    policies_free(n);
    return why[0] != '\0' ? GERR_REFUSED : 0;
}

static bool egress_one(const Gantry__V1__Policy *p, const char *host, unsigned port)
{
    if (p == NULL || p->n_egress_allow == 0) {
        return true;
    }
    for (size_t i = 0; i < p->n_egress_allow; i++) {
        struct egress e;
        if (egress_parse(p->egress_allow[i], &e) && fnmatch(e.host, host, 0) == 0 && e.lo <= port &&
            port <= e.hi) {
            return true;
        }
    }
    return false;
}

bool policies_egress_allowed(const Gantry__V1__Policy *gateway, const Gantry__V1__Policy *ns_policy,
                             const char *host, unsigned port)
{
    return egress_one(gateway, host, port) && egress_one(ns_policy, host, port);
}

/* --- the effective policy --- */

static uint64_t min_nonzero(uint64_t a, uint64_t b)
{
    return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

/* @e = @g tightened by @n (may be NULL); lists point into @g and @n. @also lists the fields where
 * both lists apply. */
static void effective(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, Gantry__V1__Policy *e,
                      char *also, size_t len)
{
    *e = *g;
    e->meta = NULL;
    also[0] = '\0';
    if (n == NULL) {
        return;
    }
    for (size_t i = 0; i < LIST_FIELDS; i++) {
        const struct list_field *f = &list_fields[i];
        const char *first;
        if (list_within(list_v(g, f), list_n(g, f), list_v(n, f), list_n(n, f), f->covers, &first)) {
            list_set(e, f, n);
        } else if (!list_within(list_v(n, f), list_n(n, f), list_v(g, f), list_n(g, f), f->covers, &first)) {
            appendf(also, len, "%s%s", also[0] ? "," : "", f->name);
        }
    }
    e->max_lifetime_seconds = min_nonzero(g->max_lifetime_seconds, n->max_lifetime_seconds);
    e->max_gpus_per_sandbox = (uint32_t)min_nonzero(g->max_gpus_per_sandbox, n->max_gpus_per_sandbox);
    e->deny_gpus = g->deny_gpus || n->deny_gpus;
    e->allow_shares = g->allow_shares && n->allow_shares;
    e->allow_exec_shares = g->allow_exec_shares && n->allow_exec_shares;
}

/* --- handlers --- */

static void read_fail(struct gate_ctx *ctx, int rv, const char *what)
{
    gate_fail(ctx, grpc_status_from_gerr(rv), "%s: %s", what,
              ctx->cl->errmsg[0] != '\0' ? ctx->cl->errmsg : gerr_str(rv));
}

/* NOT_FOUND answered when @ns is not "" and no such namespace exists. */
static bool ns_exists(struct gate_ctx *ctx, const char *ns)
{
    if (ns[0] == '\0') {
        return true;
    }
    struct proto_value p[] = {proto_text(ns)};
    int64_t n = 0;
    int rv = store_client_query_int(ctx->cl, "SELECT count(*) FROM namespaces WHERE name = ?", p, 1, &n);
    if (rv != 0) {
        read_fail(ctx, rv, "policy");
    } else if (n == 0) {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND, "namespace \"%.63s\" does not exist", ns);
    }
    return rv == 0 && n > 0;
}

static void pol_get(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__GetPolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!ns_exists(ctx, req->namespace_)) {
        return;
    }
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__Policy *p = NULL;
    int rv = policy_read(NULL, ctx->cl, req->namespace_, &rows, &p, &meta);
    if (rv != 0) {
        read_fail(ctx, rv, "get policy");
    } else if (p == NULL && req->namespace_[0] == '\0') {
        gate_fail(ctx, GRPC_STATUS_NOT_FOUND,
                  "no gateway policy is set (the built-in default allows everything; GetEffective shows it)");
    } else if (p == NULL) {
        gate_fail(
            ctx, GRPC_STATUS_NOT_FOUND,
            "no policy is set for namespace \"%.63s\" (the gateway policy applies; GetEffective shows it)",
            req->namespace_);
    } else {
        p->meta = &meta;
        grpc_call_finish_async(ctx->call, 0, NULL, &p->base);
        p->meta = NULL;
    }
    policies_free(p);
    proto_rows_close(&rows);
}

static void pol_get_effective(struct gate_ctx *ctx, void *data)
{
    (void)data;
    const Gantry__V1__GetEffectivePolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    if (!ns_exists(ctx, req->namespace_)) {
        return;
    }
    struct proto_rows gr, nr;
    proto_rows_init(&gr, 0);
    proto_rows_init(&nr, 0);
    Gantry__V1__ObjectMeta gm, nm;
    Gantry__V1__Policy *g = NULL, *n = NULL;
    int rv = policy_read(NULL, ctx->cl, "", &gr, &g, &gm);
    if (rv == 0) {
        rv = policy_read(NULL, ctx->cl, req->namespace_, &nr, &n, &nm);
    }
    Gantry__V1__Policy *def = g == NULL ? policy_default() : NULL;
    if (rv != 0 || (g == NULL && def == NULL)) {
        read_fail(ctx, rv != 0 ? rv : GERR_NOMEM, "get effective policy");
    } else {
        Gantry__V1__Policy e;
        char also[128];
        effective(g != NULL ? g : def, n, &e, also, sizeof also);
        Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
        Gantry__V1__ObjectMeta__AnnotationsEntry ann = GANTRY__V1__OBJECT_META__ANNOTATIONS_ENTRY__INIT;
        Gantry__V1__ObjectMeta__AnnotationsEntry *anns[] = {&ann};
        meta.namespace_ = (char *)req->namespace_;
        meta.name = (char *)req->namespace_;
        uint64_t gv = g != NULL ? gm.resource_version : 0, nv = n != NULL ? nm.resource_version : 0;
        meta.resource_version = gv > nv ? gv : nv;
        if (also[0] != '\0') {
            ann.key = ALSO_ENFORCED;
            ann.value = also;
            meta.n_annotations = 1;
            meta.annotations = anns;
        }
        e.meta = &meta;
        grpc_call_finish_async(ctx->call, 0, NULL, &e.base);
    }
    policies_free(g);
    policies_free(n);
    policies_free(def);
    proto_rows_close(&gr);
    proto_rows_close(&nr);
}

static int ns_active_tx(struct store_tx *tx, const char *ns)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(ns)};
    int rv = store_tx_query(tx, "SELECT phase FROM namespaces WHERE name = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = res_fail(tx, GERR_NOTFOUND, "namespace \"%.63s\" does not exist", ns);
    } else if (rv == 0 && strcmp(proto_rows_at(&rows, 0, 0)->u.b.s, "ACTIVE") != 0) {
        rv = res_fail(tx, GERR_REFUSED, "namespace \"%.63s\" is being deleted (TERMINATING)", ns);
    }
    proto_rows_close(&rows);
    return rv;
}

/* The stored version of @ns's policy (0: none) against @expected. */
static int version_tx(struct store_tx *tx, const char *ns, uint64_t expected, bool must_exist, int64_t *have)
{
    struct proto_value p[] = {proto_text(ns)};
    *have = 0;
    int rv = store_tx_query_int(tx, "SELECT resource_version FROM policies WHERE namespace = ?", p, 1, have);
    if (rv == GERR_NOTFOUND && must_exist) {
        return ns[0] == '\0' ? res_fail(tx, rv, "no gateway policy is set")
                             : res_fail(tx, rv, "no policy is set for namespace \"%.63s\"", ns);
    }
    rv = rv == GERR_NOTFOUND ? 0 : rv;
    if (rv == 0 && expected != 0 && (uint64_t)*have != expected) {
        return res_fail(tx, GERR_ABORTED, "resource_version is %" PRId64 ", not the expected %" PRIu64, *have,
                        expected);
    }
    return rv;
}

/* A namespace policy must not loosen the gateway's. */
static int tighten_tx(struct store_tx *tx, const char *ns, const Gantry__V1__Policy *n)
{
    Gantry__V1__Policy *g = NULL, *unused = NULL;
    int rv = policies_load_tx(tx, "", &g, &unused);
    struct looser *l = mem_zalloc(sizeof *l);
    if (rv == 0) {
        loosening(g, n, l);
        if (l->names[0] != '\0') {
            rv = res_fail(
                tx, GERR_REFUSED,
                "the policy of namespace \"%.63s\" may only tighten the gateway policy; looser fields: "
                "%s (%s)",
                ns, l->names, l->why);
        }
    }
    mem_free(l);
    policies_free(g);
    return rv;
}

static void reply_policy_tx(struct store_tx *tx, struct res_call *c, const char *ns)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__Policy *p = NULL;
    if (policy_read(tx, NULL, ns, &rows, &p, &meta) == 0 && p != NULL) {
        p->meta = &meta;
        res_reply(c, &p->base);
        p->meta = NULL;
    }
    policies_free(p);
    proto_rows_close(&rows);
}

static int pol_set_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__SetPolicyRequest *req = c->arg;
    const char *ns = req->policy->meta != NULL ? req->policy->meta->namespace_ : "";
    int64_t have = 0;
    int rv = ns[0] != '\0' ? ns_active_tx(tx, ns) : 0;
    if (rv == 0) {
        rv = version_tx(tx, ns, req->expected_resource_version, false, &have);
    }
    if (rv == 0 && ns[0] != '\0') {
        rv = tighten_tx(tx, ns, req->policy);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Policy", ns, ns[0] != '\0' ? ns : "gateway", ns,
                       have != 0 ? "MODIFIED" : "ADDED");
    }
    if (rv == 0) {
        Gantry__V1__Policy stored = *req->policy;
        stored.meta = NULL;
        size_t n = protobuf_c_message_get_packed_size(&stored.base);
        uint8_t *blob = mem_alloc(n + 1);
        protobuf_c_message_pack(&stored.base, blob);
        struct proto_value p[] = {proto_text(ns), proto_blob(blob, n), proto_int(c->revision),
                                  proto_text(c->ctx->who.id), proto_int(c->ctx->now_ms)};
        rv = store_tx_exec(
            tx,
            "INSERT INTO policies (namespace, policy, resource_version, created_by, updated_at_ms) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET policy = excluded.policy, "
            "resource_version = excluded.resource_version, updated_at_ms = excluded.updated_at_ms",
            p, 5, NULL);
        mem_free(blob);
    }
    if (rv == 0) {
        reply_policy_tx(tx, c, ns);
    }
    return rv;
}

static void pol_set(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__SetPolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    if (policy_input_ok(ctx, req->policy)) {
        res_mutate(ctx, data, req->request_id, &gantry__v1__policy__descriptor, pol_set_tx, (void *)req);
    }
}

static int pol_delete_tx(struct store_tx *tx, struct res_call *c)
{
    const Gantry__V1__DeletePolicyRequest *req = c->arg;
    const char *ns = req->namespace_;
    int64_t have = 0;
    int rv = version_tx(tx, ns, req->expected_resource_version, true, &have);
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    Gantry__V1__ObjectMeta meta;
    Gantry__V1__Policy *p = NULL;
    if (rv == 0) {
        rv = policy_read(tx, NULL, ns, &rows, &p, &meta);
    }
    struct proto_value np[] = {proto_text(ns)};
    if (rv == 0) {
        rv = store_tx_exec(tx, "DELETE FROM policies WHERE namespace = ?", np, 1, NULL);
    }
    if (rv == 0) {
        rv = res_event(tx, c, "Policy", ns, ns[0] != '\0' ? ns : "gateway", ns, "DELETED");
    }
    if (rv == 0 && p != NULL) {
        meta.resource_version = (uint64_t)c->revision;
        meta.deletion_timestamp_ms = c->ctx->now_ms;
        p->meta = &meta;
        res_reply(c, &p->base);
        p->meta = NULL;
    }
    policies_free(p);
    proto_rows_close(&rows);
    return rv;
}

static void pol_delete(struct gate_ctx *ctx, void *data)
{
    const Gantry__V1__DeletePolicyRequest *req = (const void *)grpc_call_request(ctx->call);
    res_mutate(ctx, data, req->request_id, &gantry__v1__policy__descriptor, pol_delete_tx, (void *)req);
}

int policies_svc_register(struct gate *g, const struct res_env *env, char *errmsg)
{
    const struct {
        const char *path;
        gate_impl_fn fn;
    } routes[] = {
        {"/gantry.v1.Policies/Get", pol_get},
        {"/gantry.v1.Policies/GetEffective", pol_get_effective},
        {"/gantry.v1.Policies/Set", pol_set},
        {"/gantry.v1.Policies/Delete", pol_delete},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (gate_route(g, routes[i].path, routes[i].fn, (void *)env) != 0) {
            gerr_set(errmsg, "policies service: cannot route %s", routes[i].path);
            return GERR_INVAL;
        }
    }
    return 0;
}
