/* Per-namespace call counters (api/gate/nsstats.h).
 *
 * Layout: slot 0 is "_other", slots 1..max the tracked names in the order they were added. A tag is
 * (slot + 1) << 16 | (method + 1). Names are published append-only: a slot's name is written before
 * n_names is raised (release), and readers load n_names (acquire) before reading names below it,
 * so lookups need no lock. */
#include "api/gate/nsstats.h"

#include <stdatomic.h>
#include <string.h>

#include <pthread.h>

#include "api/authz/authz.h"
#include "lib/mem.h"
#include "lib/names.h"
#include "server/grpc/status.h"

#define PREFIX     "/gantry.v1."
#define PREFIX_LEN (sizeof PREFIX - 1)

struct nsstats {
    unsigned max;                         /* tracked names at most */
    unsigned n_methods;                   /* rules of the authorization table */
    atomic_uint n_names;                  /* tracked names (slots 1..n_names) */
    atomic_uint overflow;                 /* names left out at the last set_known */
    pthread_mutex_t mu;                   /* orders set_known callers */
    char (*names)[NSSTATS_NAME_MAX];      /* [max + 1]; [0] is NSSTATS_OTHER */
    atomic_uint_fast64_t *calls, *errors; /* [(max + 1) * n_methods] */
    atomic_uint_fast64_t *denied;         /* [max + 1] */
};

struct nsstats *nsstats_new(unsigned max_namespaces)
{
    struct nsstats *s = mem_zalloc(sizeof *s);
    s->max = max_namespaces != 0 ? max_namespaces : NSSTATS_DEFAULT_MAX_NAMESPACES;
    s->n_methods = (unsigned)authz_rule_count();
    size_t slots = (size_t)s->max + 1;
    s->names = mem_zalloc(sizeof *s->names * slots);
    memcpy(s->names[0], NSSTATS_OTHER, sizeof NSSTATS_OTHER);
    s->calls = mem_zalloc(sizeof *s->calls * slots * s->n_methods);
    s->errors = mem_zalloc(sizeof *s->errors * slots * s->n_methods);
    s->denied = mem_zalloc(sizeof *s->denied * slots);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void nsstats_free(struct nsstats *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_destroy(&s->mu);
    mem_free(s->names);
    mem_free(s->calls);
    mem_free(s->errors);
    mem_free(s->denied);
    mem_free(s);
}

/* The slot of @ns: 1..n_names, or 0 ("_other"). */
static unsigned slot_of(struct nsstats *s, const char *ns)
{
    unsigned n = atomic_load_explicit(&s->n_names, memory_order_acquire);
    for (unsigned i = 1; i <= n; i++) {
        if (strcmp(s->names[i], ns) == 0) {
            return i;
        }
    }
    return 0;
}

unsigned nsstats_set_known(struct nsstats *s, const char *const *names, unsigned n)
{
    pthread_mutex_lock(&s->mu);
    unsigned have = atomic_load_explicit(&s->n_names, memory_order_relaxed);
    unsigned left_out = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *name = names[i];
        size_t len = name != NULL ? strlen(name) : 0;
        char why[8];
        /* Label values are written unescaped: only DNS-1123 labels, as every namespace is. */
        if (len == 0 || len >= NSSTATS_NAME_MAX ||
            !names_dns_label_ok(name, NSSTATS_NAME_MAX - 1, why, sizeof why) || slot_of(s, name) != 0) {
            continue;
        }
        if (have == s->max) {
            left_out++;
            continue;
        }
        memcpy(s->names[have + 1], name, len + 1);
        have++;
        atomic_store_explicit(&s->n_names, have, memory_order_release);
    }
    atomic_store(&s->overflow, left_out);
    pthread_mutex_unlock(&s->mu);
    return have;
}

unsigned nsstats_overflow(struct nsstats *s)
{
    return atomic_load(&s->overflow);
}

uint32_t nsstats_tag(struct nsstats *s, const char *ns, const char *path)
{
    if (s == NULL || ns == NULL || ns[0] == '\0' || path == NULL) {
        return 0;
    }
    for (unsigned m = 0; m < s->n_methods; m++) {
        if (strcmp(authz_rule_at(m)->path, path) == 0) {
            return (uint32_t)(slot_of(s, ns) + 1) << 16 | (uint32_t)(m + 1);
        }
    }
    return 0;
}

void nsstats_count(struct nsstats *s, uint32_t tag, int status)
{
    if (s == NULL || tag == 0) {
        return;
    }
    unsigned slot = (tag >> 16) - 1, m = (tag & 0xffffu) - 1;
    if (slot > s->max || m >= s->n_methods) {
        return; /* not a tag of this table */
    }
    size_t i = (size_t)slot * s->n_methods + m;
    atomic_fetch_add_explicit(&s->calls[i], 1, memory_order_relaxed);
    if (status != GRPC_STATUS_OK) {
        atomic_fetch_add_explicit(&s->errors[i], 1, memory_order_relaxed);
    }
    if (status == GRPC_STATUS_PERMISSION_DENIED) {
        atomic_fetch_add_explicit(&s->denied[slot], 1, memory_order_relaxed);
    }
}

static void write_family(struct nsstats *s, struct buf *out, unsigned n, atomic_uint_fast64_t *v,
                         const char *name)
{
    for (unsigned slot = 0; slot <= n; slot++) {
        for (unsigned m = 0; m < s->n_methods; m++) {
            uint64_t x = atomic_load_explicit(&v[(size_t)slot * s->n_methods + m], memory_order_relaxed);
            if (x == 0) {
                continue;
            }
            const char *path = authz_rule_at(m)->path;
            if (strncmp(path, PREFIX, PREFIX_LEN) == 0) {
                path += PREFIX_LEN;
            }
            buf_printf(out, "%s{namespace=\"%s\",method=\"%s\"} %llu\n", name, s->names[slot], path,
                       (unsigned long long)x);
        }
    }
}

void nsstats_write(struct nsstats *s, struct buf *out)
{
    unsigned n = atomic_load_explicit(&s->n_names, memory_order_acquire);
    buf_printf(out,
               "# HELP gantry_namespace_api_calls_total API calls this replica answered, by namespace and "
               "method.\n# TYPE gantry_namespace_api_calls_total counter\n");
    write_family(s, out, n, s->calls, "gantry_namespace_api_calls_total");
    buf_printf(out,
               "# HELP gantry_namespace_api_errors_total API calls this replica answered with a status other "
               "than OK, by namespace and method.\n# TYPE gantry_namespace_api_errors_total counter\n");
    write_family(s, out, n, s->errors, "gantry_namespace_api_errors_total");
    buf_printf(out, "# HELP gantry_namespace_api_denied_total API calls refused with PERMISSION_DENIED, by "
                    "namespace.\n# TYPE gantry_namespace_api_denied_total counter\n");
    for (unsigned slot = 0; slot <= n; slot++) {
        uint64_t x = atomic_load_explicit(&s->denied[slot], memory_order_relaxed);
        if (x != 0) {
            buf_printf(out, "gantry_namespace_api_denied_total{namespace=\"%s\"} %llu\n", s->names[slot],
                       (unsigned long long)x);
        }
    }
}
