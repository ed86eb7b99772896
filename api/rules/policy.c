/* Decisions over gantry.v1 policies (api/rules/policy.h): pure functions, no store. */
#include "api/rules/policy.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/authz/authz.h"
#include "lib/err.h"
#include "lib/mem.h"

#define MAX_ENTRIES  64u
#define MAX_PATTERN  256u
#define PORT_MAX     65535u
#define LIST_FIELDS  4
#define IMAGE_FIELD  "allowed_images"
#define DRIVER_FIELD "allowed_drivers"
#define DCFG_FIELD   "allowed_driver_config_keys"
#define EGRESS_FIELD "egress_allow"
#define SA_FIELD     "allowed_service_accounts"
#define SA_KEY       "service_account"

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

/* ServiceAccount lists are exact names and, unlike the other lists, empty means none. */
static bool sa_listed(const Gantry__V1__Policy *p, const char *name)
{
    for (size_t i = 0; i < p->n_allowed_service_accounts; i++) {
        if (strcmp(p->allowed_service_accounts[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* Is every name @n lists also listed by @g? @first_out gets the first that is not. */
static bool sa_within(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, const char **first_out)
{
    *first_out = NULL;
    for (size_t i = 0; i < n->n_allowed_service_accounts; i++) {
        if (!sa_listed(g, n->allowed_service_accounts[i])) {
            *first_out = n->allowed_service_accounts[i];
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

bool policy_rules_validate(const Gantry__V1__Policy *p, char *why, size_t len)
{
    if (p == NULL) {
        snprintf(why, len, "policy is required");
        return false;
    }
    for (size_t i = 0; i < LIST_FIELDS; i++) {
        const struct list_field *f = &list_fields[i];
        if (list_n(p, f) > MAX_ENTRIES) {
            snprintf(why, len, "policy.%s: at most %u entries", f->name, MAX_ENTRIES);
            return false;
        }
        for (size_t k = 0; k < list_n(p, f); k++) {
            if (!entry_ok(f, list_v(p, f)[k])) {
                snprintf(why, len, "policy.%s[%zu] \"%.100s\" is not %s", f->name, k, list_v(p, f)[k],
                         entry_rule(f));
                return false;
            }
        }
    }
    if (p->n_allowed_service_accounts > MAX_ENTRIES) {
        snprintf(why, len, "policy.%s: at most %u entries", SA_FIELD, MAX_ENTRIES);
        return false;
    }
    for (size_t k = 0; k < p->n_allowed_service_accounts; k++) {
        const char *sa = p->allowed_service_accounts[k];
        if (!authz_sa_name_ok(sa)) {
            snprintf(why, len,
                     "policy.%s[%zu] \"%.100s\" is not a ServiceAccount name (a DNS-1123 subdomain: at most "
                     "253 characters of a-z, 0-9, '-' and '.')",
                     SA_FIELD, k, sa);
            return false;
        }
        if (authz_sa_reserved(sa)) {
            snprintf(why, len, "policy.%s[%zu] \"%s\" is the gateway's own ServiceAccount: never allowed",
                     SA_FIELD, k, sa);
            return false;
        }
    }
    if (p->max_lifetime_seconds > (uint64_t)INT64_MAX / 1000) {
        snprintf(why, len, "policy.max_lifetime_seconds is out of range");
        return false;
    }
    return true;
}

/* --- tightening --- */

static void looser_add(struct policy_looser *l, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void looser_add(struct policy_looser *l, const char *field, const char *fmt, ...)
{
    char detail[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    appendf(l->names, sizeof l->names, "%s%s", l->names[0] ? ", " : "", field);
    appendf(l->why, sizeof l->why, "%s%s: %s", l->why[0] ? "; " : "", field, detail);
}

static void loosen_max(struct policy_looser *l, const char *name, uint64_t g, uint64_t n)
{
    if (g != 0 && n == 0) {
        looser_add(l, name, "unlimited > %" PRIu64, g);
    } else if (g != 0 && n > g) {
        looser_add(l, name, "%" PRIu64 " > %" PRIu64, n, g);
    }
}

void policy_rules_loosening(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, struct policy_looser *l)
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
    const char *sa = NULL;
    if (!sa_within(g, n, &sa)) {
        looser_add(l, SA_FIELD, "\"%.60s\" is not in the gateway's list%s", sa,
                   g->n_allowed_service_accounts == 0 ? " (empty: none)" : "");
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

/* --- the built-in default --- */

Gantry__V1__Policy *policy_rules_default(void)
{
    static const uint8_t none[1] = {0};
    Gantry__V1__Policy *p = gantry__v1__policy__unpack(NULL, 0, none);
    if (p != NULL) {
        p->allow_shares = true;
        p->allow_exec_shares = true;
    }
    return p;
}

void policy_rules_free(Gantry__V1__Policy *p)
{
    if (p != NULL) {
        gantry__v1__policy__free_unpacked(p, NULL);
    }
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

int policy_rules_sa_of(const char *value, char *out, size_t len)
{
    out[0] = '\0';
    json_t *o = json_loads(value, 0, NULL);
    json_t *sa = json_object_get(o, SA_KEY);
    int rv = 0;
    if (sa != NULL) {
        const char *name = json_string_value(sa);
        if (name != NULL && authz_sa_name_ok(name) && strlen(name) < len) {
            snprintf(out, len, "%s", name);
        } else {
            rv = GERR_INVAL;
        }
    }
    json_decref(o);
    return rv;
}

/* Each driver_config entry's service_account must be on @p's list (empty: none). */
static void check_service_accounts(const Gantry__V1__Policy *p, const Gantry__V1__SandboxSpec *spec,
                                   struct violations *v)
{
    for (size_t i = 0; i < spec->n_driver_config; i++) {
        char sa[AUTHZ_SA_NAME_MAX + 1];
        if (policy_rules_sa_of(spec->driver_config[i]->value, sa, sizeof sa) != 0 || sa[0] == '\0') {
            continue; /* malformed ones were refused by driver_config_ok */
        }
        if (authz_sa_reserved(sa)) {
            violation(v, SA_FIELD,
                      "driver_config %s \"%s\" is the gateway's own ServiceAccount: never allowed", SA_KEY,
                      sa);
        } else if (!sa_listed(p, sa)) {
            violation(v, SA_FIELD, "driver_config %s \"%.100s\" is not in %s%s", SA_KEY, sa, SA_FIELD,
                      p->n_allowed_service_accounts == 0 ? " (empty: none)" : "");
        }
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
    check_service_accounts(p, spec, v);
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
        char sa[AUTHZ_SA_NAME_MAX + 1];
        if (policy_rules_sa_of(spec->driver_config[i]->value, sa, sizeof sa) != 0) {
            snprintf(
                why, len,
                "driver_config[\"%.63s\"].%s is not a ServiceAccount name (a DNS-1123 subdomain: at most "
                "253 characters of a-z, 0-9, '-' and '.')",
                spec->driver_config[i]->key, SA_KEY);
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

int policy_rules_check_sandbox(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, const char *ns,
                               const Gantry__V1__SandboxSpec *spec, const char *driver, char *why, size_t len)
{
    why[0] = '\0';
    int rv = driver_config_ok(spec, why, len);
    if (rv != 0) {
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
    return why[0] != '\0' ? GERR_REFUSED : 0;
}

int policy_rules_check_sandbox_policy(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n,
                                      const Gantry__V1__Policy *s, char *why, size_t len)
{
    why[0] = '\0';
    if (s == NULL) {
        return 0;
    }
    const struct {
        const char *name;
        bool set;
    } other[] = {
        {"allowed_images", s->n_allowed_images > 0},
        {"allowed_drivers", s->n_allowed_drivers > 0},
        {"max_lifetime_seconds", s->max_lifetime_seconds != 0},
        {"max_gpus_per_sandbox", s->max_gpus_per_sandbox != 0},
        {"allowed_driver_config_keys", s->n_allowed_driver_config_keys > 0},
        {"allow_shares", s->allow_shares},
        {"allow_exec_shares", s->allow_exec_shares},
        {"deny_gpus", s->deny_gpus},
        {SA_FIELD, s->n_allowed_service_accounts > 0},
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        if (other[i].set) {
            snprintf(why, len,
                     "sandbox.spec.policy.%s: a sandbox's own policy carries only egress_allow (set the "
                     "other fields on the namespace or gateway policy)",
                     other[i].name);
            return GERR_INVAL;
        }
    }
    char inner[GERR_MSG_SIZE];
    if (!policy_rules_validate(s, inner, sizeof inner)) {
        snprintf(why, len, "sandbox.spec.%s", inner);
        return GERR_INVAL;
    }
    const struct {
        const char *layer;
        const Gantry__V1__Policy *p;
    } layers[] = {{"the gateway policy", g}, {"the namespace policy", n}};
    for (size_t i = 0; i < 2 && s->n_egress_allow > 0; i++) {
        const char *first = NULL;
        const Gantry__V1__Policy *p = layers[i].p;
        if (p == NULL || p->n_egress_allow == 0 ||
            list_within(p->egress_allow, p->n_egress_allow, s->egress_allow, s->n_egress_allow, egress_covers,
                        &first)) {
            continue;
        }
        snprintf(
            why, len,
            "sandbox.spec.policy.egress_allow entry \"%.100s\" is outside %s's egress_allow: a sandbox's "
            "own policy may only tighten the gateway and namespace policies",
            first != NULL ? first : "", layers[i].layer);
        return GERR_REFUSED;
    }
    return 0;
}

uint64_t policy_rules_cap_lifetime(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n,
                                   uint64_t lifetime_s)
{
    uint64_t pmax[2] = {g != NULL ? g->max_lifetime_seconds : 0, n != NULL ? n->max_lifetime_seconds : 0};
    for (int k = 0; k < 2; k++) {
        lifetime_s = pmax[k] != 0 && pmax[k] < lifetime_s ? pmax[k] : lifetime_s;
    }
    return lifetime_s;
}

const char *policy_rules_egress_match(const Gantry__V1__Policy *p, const char *host, unsigned port)
{
    if (p == NULL || p->n_egress_allow == 0) {
        return "";
    }
    for (size_t i = 0; i < p->n_egress_allow; i++) {
        struct egress e;
        if (egress_parse(p->egress_allow[i], &e) && fnmatch(e.host, host, 0) == 0 &&
            (port == 0 || (e.lo <= port && port <= e.hi))) {
            return p->egress_allow[i];
        }
    }
    return NULL;
}

bool policy_rules_egress_allowed(const Gantry__V1__Policy *gateway, const Gantry__V1__Policy *ns_policy,
                                 const char *host, unsigned port)
{
    return policy_rules_egress_match(gateway, host, port) != NULL &&
           policy_rules_egress_match(ns_policy, host, port) != NULL;
}

/* --- shares --- */

bool policy_rules_share_allowed(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, bool exec,
                                const char **by, const char **field)
{
    const char *what = exec ? "allow_exec_shares" : "allow_shares";
    *by = *field = NULL;
    if (!g->allow_shares || (exec && !g->allow_exec_shares)) {
        *by = "the gateway policy";
        *field = !g->allow_shares ? "allow_shares" : what;
    } else if (n != NULL && (!n->allow_shares || (exec && !n->allow_exec_shares))) {
        *by = "the namespace policy";
        *field = !n->allow_shares ? "allow_shares" : what;
    }
    return *by == NULL;
}

/* --- the effective policy --- */

static uint64_t min_nonzero(uint64_t a, uint64_t b)
{
    return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

void policy_rules_effective(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, Gantry__V1__Policy *e,
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
    const char *first;
    if (sa_within(g, n, &first)) {
        e->n_allowed_service_accounts = n->n_allowed_service_accounts;
        e->allowed_service_accounts = n->allowed_service_accounts;
    } else if (!sa_within(n, g, &first)) {
        appendf(also, len, "%s%s", also[0] ? "," : "", SA_FIELD);
    }
    e->max_lifetime_seconds = min_nonzero(g->max_lifetime_seconds, n->max_lifetime_seconds);
    e->max_gpus_per_sandbox = (uint32_t)min_nonzero(g->max_gpus_per_sandbox, n->max_gpus_per_sandbox);
    e->deny_gpus = g->deny_gpus || n->deny_gpus;
    e->allow_shares = g->allow_shares && n->allow_shares;
    e->allow_exec_shares = g->allow_exec_shares && n->allow_exec_shares;
}
